"""The one small interface every asset generator implements, the data it speaks in, and how a
generator module declares itself (`GeneratorKind`) for settings and the registry.

A generator turns a `GenerationRequest` (category, description, seed, checked options) into
one `GeneratedFile`. It reports progress through the callback it is given, and raises a
`GeneratorError` whose `kind` says whether trying again can help. It never touches the
database, storage or the job: the task around it does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# The categories and the one file format each is delivered in.
CATEGORY_FORMATS: Mapping[str, str] = {
    "image": "png",
    "texture": "png",
    "audio": "wav",
    "model3d": "glb",
}

CONTENT_TYPES: Mapping[str, str] = {
    "png": "image/png",
    "wav": "audio/wav",
    "glb": "model/gltf-binary",
}


@dataclass(frozen=True)
class GenerationRequest:
    category: str  # a key of CATEGORY_FORMATS
    description: str
    seed: int
    style: str | None = None
    # Already checked by the generator's `check_options` (defaults filled in).
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        return CATEGORY_FORMATS[self.category]


@dataclass(frozen=True)
class GeneratedFile:
    data: bytes
    format: str  # "png", "wav" or "glb"
    # What is known of the file: width/height, duration_s/sample_rate, vertices/triangles ...
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # USD the provider charged for it, when it differs from the estimate.
    cost: float | None = None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


class Progress(Protocol):
    def __call__(self, percent: int, message: str | None = None) -> None:
        """Report progress (0..100). May raise `Cancelled`, so a generator that calls it
        between steps stops when its job is cancelled."""


class Cancelled(Exception):
    """The job was cancelled while the generator worked."""


class GeneratorError(Exception):
    """A generator could not make the file. `kind` says how, and so whether to try again.

    Kinds: "unavailable" (no connection, reset, 5xx), "timeout", "rate_limited" (429, with
    `retry_after` when the provider said) are transient; "refused" (moderation or policy),
    "rejected" (the provider refused the request as invalid), "unauthorized" (the provider
    refused Gaia's credentials), "bad_response" (garbage, a file of the wrong type, one too
    large or that does not decode) and "failed" (the provider's task ended in failure) are not.
    """

    TRANSIENT = frozenset({"unavailable", "timeout", "rate_limited"})

    def __init__(self, generator: str, kind: str, message: str, *,
                 retry_after: float | None = None, upstream_status: int | None = None):
        super().__init__(message)
        self.generator = generator
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.upstream_status = upstream_status

    @property
    def transient(self) -> bool:
        return self.kind in self.TRANSIENT

    def __repr__(self) -> str:
        return f"GeneratorError({self.generator!r}, {self.kind!r}, {self.message!r})"


class OptionError(ValueError):
    """An option a generator cannot honour; `option` names it (for a 400/422 naming it)."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option
        self.message = message


class Generator(Protocol):
    id: str
    name: str
    categories: tuple[str, ...]

    def check_options(self, category: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options with defaults filled in; `OptionError` naming any unknown or bad one."""

    def cost(self, request: GenerationRequest) -> float:
        """What making this file costs in USD, known before any call (0 for built-in)."""

    def generate(self, request: GenerationRequest, progress: Progress) -> GeneratedFile:
        """Make the file, or raise `GeneratorError` (or `Cancelled` from `progress`)."""


@dataclass(frozen=True)
class GeneratorSettings:
    """One configured generator: where it is and how to authenticate."""

    id: str
    base_url: str | None = None
    api_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    # How long to wait between polls of a provider's task, and for it in all.
    poll_interval: float = 2.0
    task_timeout: float = 900.0
    # The largest file accepted from a provider.
    max_download_bytes: int = 50 * 1024 * 1024
    # Simulated time a file takes (the built-in generator: demos, and tests of slow jobs).
    latency_ms: float = 0.0


@dataclass(frozen=True)
class GeneratorKind:
    """What one generator module registers in `generators.kinds`."""

    id: str
    name: str
    categories: tuple[str, ...]
    factory: Callable[[GeneratorSettings], Generator]
    # Configured when this variable is set (None: always, as the built-in one is).
    key_variable: str | None = None
    # Read when `key_variable` is unset (OPENAI_IMAGES_API_KEY falls back to OPENAI_API_KEY).
    fallback_key_variable: str | None = None
    url_variable: str | None = None
    default_base_url: str | None = None
    # Milliseconds of simulated latency (`GeneratorSettings.latency_ms`), where supported.
    latency_variable: str | None = None
