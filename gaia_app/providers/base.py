"""The one small interface every LLM provider implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


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
class Completion:
    text: str
    model: str
    usage: Usage
    finish_reason: str = "stop"


@dataclass(frozen=True)
class StreamChunk:
    """One piece of a streamed answer; the last one carries `usage` and `finish_reason`."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class ProviderHealth:
    status: str  # "available", "degraded" or "unavailable"
    latency_ms: float | None = None
    detail: str | None = None
    extra: dict = field(default_factory=dict)


class LLMProvider(Protocol):
    id: str
    name: str
    capabilities: tuple[str, ...]

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
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.kind = kind
        self.message = message
        self.upstream_status = upstream_status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE

    def __repr__(self) -> str:
        return f"ProviderError({self.provider!r}, {self.kind!r}, {self.message!r})"
