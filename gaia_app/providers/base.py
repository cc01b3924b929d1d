"""The one small interface every LLM provider implements, the data it speaks in, and how an
adapter declares itself (`ProviderKind`, `EnvProvider`) for settings and the registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelInfo:
    id: str
    name: str
    provider: str
    capabilities: tuple[str, ...]
    context_window: int | None = None
    max_tokens: int | None = None
    # USD per million tokens, where known.
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None
    # Whether `capabilities` is what the model is known to take (declared, or a known model):
    # then a request needing another (images without "vision") is refused; otherwise the
    # provider decides.
    capabilities_known: bool = False

    def to_dict(self) -> dict:
        pricing = None
        if self.input_price_per_mtok is not None or self.output_price_per_mtok is not None:
            pricing = {
                "currency": "USD",
                "input_per_million_tokens": self.input_price_per_mtok,
                "output_per_million_tokens": self.output_price_per_mtok,
            }
        return {
            "id": self.id,
            "name": self.name,
            "provider": self.provider,
            "capabilities": list(self.capabilities),
            "context_window": self.context_window,
            "max_tokens": self.max_tokens,
            "pricing": pricing,
        }


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    # The Chat Completions parameters beyond the ones above that this provider takes (see
    # `providers.params`): forwarded as they are by OpenAI-kind adapters, translated by others.
    options: Mapping[str, Any] = field(default_factory=dict)
    # The messages exactly as an OpenAI-shaped client sent them (content parts, tool calls),
    # for adapters that pass them through; `messages` is their text, for everything else.
    wire_messages: tuple[Mapping[str, Any], ...] | None = None
    # How many of `wire_messages` Gaia put in front (a persona's prompt): errors about a message
    # name it by the client's count.
    prepended: int = 0
    # Relaying the provider's own answer (`Completion.raw`, `StreamChunk.raw`) to a /v1 client:
    # the model name it shows (None: the provider's), and whether it asked for a usage chunk.
    relay: bool = False
    relay_model: str | None = None
    relay_usage: bool = False


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class ToolCall:
    """A function the model asks the caller to run: the call's id, the function's name and its
    arguments (JSON text, as the model wrote them)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    usage: Usage
    finish_reason: str = "stop"
    # With `ChatRequest.relay`: the whole answer in Chat Completions' shape, to send as it is.
    raw: dict | None = None
    # The tools the answer calls (choice 0), in every mode.
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class StreamChunk:
    """One piece of a streamed answer; the last one carries `usage` and `finish_reason`, and
    the whole tool calls of choice 0 when the answer calls tools (in every mode)."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    # With `ChatRequest.relay`: the server-sent event to send as it is (`data: {...}\n\n`).
    raw: bytes | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class ProviderHealth:
    status: str  # "available", "degraded" or "unavailable"
    latency_ms: float | None = None
    detail: str | None = None
    extra: dict = field(default_factory=dict)


class LLMProvider(Protocol):
    id: str
    name: str
    # The wire format it speaks: a key of `providers.kinds.KINDS` (decides `providers.params`).
    kind: str
    capabilities: tuple[str, ...]
    # What answers when a request names no model (else the first listed).
    preferred_model: str | None

    def list_models(self) -> list[ModelInfo]: ...

    def get_model(self, model_id: str) -> ModelInfo | None: ...

    def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]: ...

    def health(self) -> ProviderHealth: ...

    def record_failure(self, error: ProviderError) -> None:
        """A chat call failed: health shows it for a while."""


class ProviderError(Exception):
    """A provider call failed. `kind` says how; it decides fallback and what the client sees.

    Kinds: "unavailable" (no connection, reset, 5xx, overloaded), "timeout", "rate_limited"
    (429, with `retry_after` when the provider said), "unauthorized" (the provider refused
    Gaia's own credentials), "not_found" (the model), "rejected" (the provider refused the
    request as invalid), "bad_response" (an answer that is not its wire format) and
    "interrupted" (a stream that broke after it started).
    """

    # Failures where trying another provider (or later) can help.
    RETRYABLE = frozenset({"unavailable", "timeout", "rate_limited"})

    def __init__(
        self,
        provider: str,
        kind: str,
        message: str,
        *,
        upstream_status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.kind = kind
        self.message = message
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        # What the provider's error object said, kept for the client (`context_length_exceeded`).
        self.code = code
        self.param = param

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE

    def __repr__(self) -> str:
        return f"ProviderError({self.provider!r}, {self.kind!r}, {self.message!r})"


# -- how providers are configured ------------------------------------------------------------


@dataclass(frozen=True)
class ProviderDeclaration:
    """One configured provider: where it is, how to authenticate, what is known of its models."""

    id: str
    kind: str  # the adapter (wire format): a key of `providers.kinds.KINDS`
    name: str
    base_url: str | None = None
    api_key: str | None = None
    # Model metadata declared by the operator (dicts with the keys of `ModelInfo`).
    models: tuple[Mapping, ...] = ()
    # Ask the provider for its live model list (GET /models) now and then.
    list_models: bool = True
    preferred_model: str | None = None
    # Adapter-specific numbers read from the environment (see `EnvProvider.options`).
    options: Mapping[str, float] = field(default_factory=dict)
    connect_timeout: float = 3.0
    # The longest silence allowed from a provider (between bytes, first token included).
    read_timeout: float = 60.0
    model_list_ttl: float = 600.0


@dataclass(frozen=True)
class EnvProvider:
    """A provider that environment variables alone configure (OPENAI_API_KEY, ...)."""

    id: str
    name: str
    # Configured when any of these variables is set; when empty, always (unless `disabled_by`).
    enabled_by: tuple[str, ...] = ()
    key_variable: str | None = None
    url_variable: str | None = None
    default_base_url: str | None = None
    # Appended to a base URL that lacks it (Ollama serves its OpenAI-compatible API under /v1).
    url_suffix: str = ""
    # A boolean variable that removes the provider (GAIA_DISABLE_LOCAL_PROVIDER).
    disabled_by: str | None = None
    # option name -> (variable, default): numbers handed to the adapter in `options`.
    options: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    preferred_model: str | None = None
    # Where it stands in the preference order (providers-file entries stand at 50).
    rank: int = 50


@dataclass(frozen=True)
class ProviderKind:
    """What one adapter module registers in `providers.kinds`."""

    kind: str
    adapter: Callable[..., LLMProvider]  # (declaration, on_change=..., clock=...) -> provider
    environment: tuple[EnvProvider, ...] = ()
    # Whether GAIA_PROVIDERS_FILE may declare providers of this kind.
    declarable: bool = True
