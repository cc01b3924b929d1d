"""`builtin`: the offline generator. It draws pictures and seamless textures, synthesises
sounds and builds 3-D models procedurally, free, with no network and no credentials.

The same request always gives the same bytes: the random generator is seeded from a SHA-256
of (description, seed, style), and the description's and style's words pick what is made.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gaia_app.generators.base import (
    CATEGORY_FORMATS,
    GeneratedFile,
    GenerationRequest,
    GeneratorError,
    GeneratorKind,
    OptionError,
    Progress,
)

if TYPE_CHECKING:
    import numpy as np

# numpy, Pillow and the procedural modules load when the generator is built: importing this
# module (the kinds table, settings) does not pay for them.


@dataclass(frozen=True)
class OptionSpec:
    """One option: its default and what it accepts (JSON integers, or any JSON number)."""

    default: int | float
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[int, ...] | None = None
    integer: bool = True

    def check(self, name: str, value: Any) -> int | float:
        # bool is an int in Python but `true` is no number in JSON.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if self.integer else "a number"
            raise OptionError(name, f"{name} must be {kind}, not {type(value).__name__}")
        if self.integer and not isinstance(value, int):
            raise OptionError(name, f"{name} must be an integer, not {value!r}")
        if not math.isfinite(value):
            raise OptionError(name, f"{name} must be a finite number")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(choice) for choice in self.choices)
            raise OptionError(name, f"{name} must be one of {allowed}, not {value!r}")
        if self.minimum is not None and self.maximum is not None and not self.minimum <= value <= self.maximum:
            raise OptionError(name, f"{name} must be between {self.minimum:g} and {self.maximum:g}, "
                                    f"not {value!r}")
        return value if self.integer else float(value)


OPTIONS: Mapping[str, Mapping[str, OptionSpec]] = {
    "image": {"width": OptionSpec(512, 64, 1024), "height": OptionSpec(512, 64, 1024)},
    "texture": {"size": OptionSpec(512, 64, 1024)},
    "audio": {"duration": OptionSpec(2.0, 0.1, 30, integer=False),
              "sample_rate": OptionSpec(44100, choices=(22050, 44100, 48000))},
    "model3d": {"detail": OptionSpec(32, 8, 128)},
}


def keywords(*texts: str | None) -> tuple[str, ...]:
    """The lower-case words of the texts in order, without repeats, each plural followed by
    its singular ("bricks" -> "brick") and each hyphenated word also joined ("8-bit" -> "8bit")."""
    words: list[str] = []
    for text in texts:
        for compound in re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", (text or "").lower()):
            parts = compound.split("-")
            for word in parts + ([compound.replace("-", "")] if len(parts) > 1 else []):
                words.append(word)
                if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
                    words.append(word[:-1])
    return tuple(dict.fromkeys(words))


def seeded_rng(request: GenerationRequest) -> np.random.Generator:
    """A generator seeded by a stable hash (never Python's `hash`, which varies per process)."""
    import numpy as np

    identity = json.dumps([request.description, request.seed, request.style], ensure_ascii=False)
    return np.random.default_rng(int.from_bytes(hashlib.sha256(identity.encode()).digest()[:16], "big"))


class BuiltinGenerator:
    id = "builtin"
    name = "Built-in (offline)"
    categories: tuple[str, ...] = tuple(CATEGORY_FORMATS)

    def __init__(self, latency_ms: float = 0.0) -> None:
        self.latency_ms = latency_ms
        # Loaded with the generator (the first asset request), not with this module, and not
        # first in a job's thread, where another thread could meet a half-imported numpy.
        from gaia_app.generators import procedural_audio, procedural_image, procedural_mesh, procedural_texture

        self._makers = {
            "image": procedural_image.make_image, "texture": procedural_texture.make_texture,
            "audio": procedural_audio.make_audio, "model3d": procedural_mesh.make_model,
        }

    def _simulate_latency(self, progress: Progress) -> None:
        """Take `latency_ms` like a remote provider would, in steps that report progress (so a
        slow job can be cancelled, and its lease renewed, on its way)."""
        steps = 10
        for step in range(steps):
            time.sleep(self.latency_ms / 1000.0 / steps)
            progress(5 + step * 4)

    def check_options(self, category: str, options: Mapping[str, Any]) -> dict[str, Any]:
        if category not in OPTIONS:
            raise OptionError("category", f"the built-in generator does not make {category!r}")
        if not isinstance(options, Mapping):
            raise OptionError("options", "options must be an object")
        specs = OPTIONS[category]
        for name in options:
            if name not in specs:
                known = ", ".join(sorted(specs))
                raise OptionError(str(name), f"unknown option {name!r} for {category} (known: {known})")
        return {name: spec.check(name, options[name]) if name in options else spec.default
                for name, spec in specs.items()}

    def cost(self, request: GenerationRequest) -> float:
        return 0.0

    def generate(self, request: GenerationRequest, progress: Progress) -> GeneratedFile:
        try:
            options = self.check_options(request.category, request.options)
        except OptionError as error:
            raise GeneratorError(self.id, "rejected", f"{error.option}: {error.message}") from error
        if self.latency_ms:
            self._simulate_latency(progress)
        words = keywords(request.description, request.style)
        rng = seeded_rng(request)
        category = request.category
        make = self._makers[category]
        if category == "image":
            data, metadata = make(words, rng, options["width"], options["height"], progress)
        elif category == "texture":
            data, metadata = make(words, rng, options["size"], progress)
        elif category == "audio":
            data, metadata = make(words, rng, options["duration"], options["sample_rate"], progress)
        else:
            data, metadata = make(words, rng, options["detail"], progress)
        return GeneratedFile(data=data, format=CATEGORY_FORMATS[category], metadata=metadata, cost=0.0)


KIND = GeneratorKind(
    id="builtin",
    name="Built-in (offline)",
    categories=tuple(CATEGORY_FORMATS),
    factory=lambda settings: BuiltinGenerator(latency_ms=settings.latency_ms),
    latency_variable="ASSET_BUILTIN_LATENCY_MS",
)
