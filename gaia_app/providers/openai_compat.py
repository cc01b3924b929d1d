"""OpenAI's Chat Completions API, and every server that speaks it (Ollama, vLLM, Groq, ...).

Used for `openai` (OPENAI_BASE_URL), `ollama` (OLLAMA_BASE_URL) and the providers declared in
GAIA_PROVIDERS_FILE with kind "openai".
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from gaia_app.providers.base import (
    ChatRequest,
    Completion,
    EnvProvider,
    ModelInfo,
    ProviderDeclaration,
    ProviderError,
    ProviderKind,
    StreamChunk,
    ToolCall,
    Usage,
)
from gaia_app.providers.common import RemoteProvider, estimate_usage

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"

# What is known of OpenAI's current chat models: context window, output limit, and list
# price in USD per million input/output tokens.
OPENAI_MODELS = {
    "gpt-4o": (128_000, 16_384, 2.50, 10.00),
    "gpt-4o-mini": (128_000, 16_384, 0.15, 0.60),
    "gpt-4.1": (1_047_576, 32_768, 2.00, 8.00),
    "gpt-4.1-mini": (1_047_576, 32_768, 0.40, 1.60),
    "gpt-4.1-nano": (1_047_576, 32_768, 0.10, 0.40),
    "o4-mini": (200_000, 100_000, 1.10, 4.40),
    "gpt-5": (400_000, 128_000, 1.25, 10.00),
    "gpt-5-mini": (400_000, 128_000, 0.25, 2.00),
    "gpt-5-nano": (400_000, 128_000, 0.05, 0.40),
}
OPENAI_CAPABILITIES = ("chat", "streaming", "vision", "tools", "json_schema")
# Listed by GET /models but not chat models.
_NOT_CHAT = (
    "text-embedding", "embedding", "whisper", "tts", "dall-e", "davinci", "babbage",
    "omni-moderation", "text-moderation", "gpt-image", "sora", "computer-use",
)


def _calls_of(message: dict) -> tuple[ToolCall, ...]:
    """The tool calls of a completion's message. Raises TypeError, KeyError, ... on an
    unknown shape."""
    calls = []
    for call in message.get("tool_calls") or ():
        function = call["function"]
        if not isinstance(call["id"], str) or not isinstance(function["name"], str):
            raise TypeError("tool call")
        calls.append(ToolCall(call["id"], function["name"], str(function.get("arguments") or "")))
    return tuple(calls)


class _StreamedCalls:
    """The tool calls of choice 0 as their deltas come: id and name first, then the
    arguments in pieces, each call by its index."""

    def __init__(self) -> None:
        self._calls: dict[int, list] = {}

    def take(self, delta: dict) -> None:
        """Raises TypeError, KeyError, ... on a delta in an unknown shape."""
        for piece in delta.get("tool_calls") or ():
            call = self._calls.setdefault(int(piece.get("index", 0)), ["", "", []])
            function = piece.get("function") or {}
            if piece.get("id"):
                call[0] = str(piece["id"])
            if function.get("name"):
                call[1] = str(function["name"])
            if function.get("arguments"):
                call[2].append(str(function["arguments"]))

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(call_id, name, "".join(pieces))
                     for _, (call_id, name, pieces) in sorted(self._calls.items()))


def _text_of(content) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise TypeError("content")


class OpenAICompatibleProvider(RemoteProvider):
    kind = "openai"

    def __init__(self, declaration: ProviderDeclaration, on_change=lambda: None, clock=None) -> None:
        headers = {"Authorization": f"Bearer {declaration.api_key}"} if declaration.api_key else {}
        self.is_openai = (declaration.base_url or "").rstrip("/") == OPENAI_DEFAULT_BASE_URL
        super().__init__(declaration, headers, OPENAI_MODELS if self.is_openai else {}, on_change, clock)

    def model(self, model_id: str, declared: Mapping | None = None) -> ModelInfo:
        """OpenAI's own chat models read images, call tools and follow JSON schemas; what
        other OpenAI-compatible servers' models take is not known (the server decides)."""
        if self.is_openai and model_id in OPENAI_MODELS and (not declared or "capabilities" not in declared):
            declared = {**(declared or {}), "capabilities": OPENAI_CAPABILITIES}
        return super().model(model_id, declared)

    def _fetch_models(self) -> list[ModelInfo]:
        data = self.http.get_json("/models")
        entries = data.get("data")
        if not isinstance(entries, list):
            raise ProviderError(self.id, "bad_response", f"{self.id} listed its models in an unknown shape")
        models = []
        for entry in entries:
            model_id = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(model_id, str) and model_id and not model_id.startswith(_NOT_CHAT):
                models.append(self.model(model_id))
        return models

    # -- chat ----------------------------------------------------------------------------

    def _body(self, request: ChatRequest, stream: bool) -> dict:
        """What the client sent (its messages and parameters as they were), with the model
        resolved: nothing else is rebuilt."""
        messages = (list(request.wire_messages) if request.wire_messages is not None
                    else [{"role": m.role, "content": m.content} for m in request.messages])
        body: dict = {**request.options, "model": request.model, "messages": messages}
        if request.max_tokens is not None:
            # OpenAI's newer models only take max_completion_tokens; other servers know max_tokens.
            body["max_completion_tokens" if self.is_openai else "max_tokens"] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if stream:
            body["stream"] = True
            # Always asked for, so usage is known; a client that did not ask never sees it.
            body["stream_options"] = {"include_usage": True}
        return body

    @staticmethod
    def _relayed(request: ChatRequest, chunk: dict, data: str) -> bytes | None:
        """The event to send the client: as it came, unless it names a persona's model, or
        it is the usage chunk the client did not ask for."""
        if not chunk.get("choices") and "usage" in chunk and not request.relay_usage:
            return None
        if request.relay_model is not None or "\n" in data:
            if request.relay_model is not None:
                chunk["model"] = request.relay_model
            data = json.dumps(chunk, separators=(",", ":"))
        return b"data: " + data.encode() + b"\n\n"

    def _bad(self, what: str) -> ProviderError:
        return ProviderError(self.id, "bad_response", f"{self.id} sent {what}")

    def complete(self, request: ChatRequest) -> Completion:
        data = self.http.post_json("/chat/completions", self._body(request, stream=False))
        try:
            choice = data["choices"][0]
            text = _text_of(choice["message"].get("content")) or ""
            finish = choice.get("finish_reason") or "stop"
            calls = _calls_of(choice["message"])
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._bad("a completion without a message") from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        if request.relay and request.relay_model is not None:
            data["model"] = request.relay_model
        return Completion(
            text=text,
            model=str(data.get("model") or request.model),
            usage=self._usage(usage, request, text),
            finish_reason=finish,
            raw=data if request.relay else None,
            tool_calls=calls,
        )

    def _usage(self, usage: dict | None, request: ChatRequest, text: str) -> Usage:
        try:
            return Usage(int(usage["prompt_tokens"]), int(usage["completion_tokens"]))
        except (TypeError, KeyError, ValueError):
            # Servers that do not report usage: count roughly, rather than record nothing.
            return estimate_usage(request.messages, text)

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        response = self.http.request("POST", "/chat/completions", self._body(request, stream=True), stream=True)
        events = self.http.events(response)
        text_parts: list[str] = []
        calls = _StreamedCalls()
        finish: str | None = None
        usage: dict | None = None
        done = False
        try:
            for _event, data in events:
                if done:
                    continue  # read on to the end of the body, so its connection is reused
                if data.strip() == "[DONE]":
                    done = True
                    continue
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise self._bad("a stream event that is not JSON") from None
                if not isinstance(chunk, dict):
                    raise self._bad("an unexpected stream event")
                if "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise ProviderError(self.id, "interrupted", f"{self.id} failed mid-answer: {message}")
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                piece = ""
                for choice in chunk.get("choices") or ():
                    try:
                        found = _text_of((choice.get("delta") or {}).get("content"))
                        if choice.get("index", 0) == 0:
                            calls.take(choice.get("delta") or {})
                    except (TypeError, AttributeError, KeyError, ValueError):
                        raise self._bad("a stream event in an unknown shape") from None
                    if found and choice.get("index", 0) == 0:
                        piece = found
                    if choice.get("finish_reason") and choice.get("index", 0) == 0:
                        finish = choice["finish_reason"]
                if piece:
                    text_parts.append(piece)
                if request.relay:
                    raw = self._relayed(request, chunk, data)
                    if raw is not None or piece:
                        yield StreamChunk(text=piece, raw=raw)
                elif piece:
                    yield StreamChunk(text=piece)
        finally:
            events.close()
        if not done and finish is None:
            raise ProviderError(self.id, "interrupted", f"{self.id} ended its answer early")
        text = "".join(text_parts)
        yield StreamChunk(usage=self._usage(usage, request, text), finish_reason=finish or "stop",
                          tool_calls=calls.calls())


KIND = ProviderKind(
    kind="openai",
    adapter=OpenAICompatibleProvider,
    environment=(
        EnvProvider(
            id="openai", name="OpenAI", enabled_by=("OPENAI_API_KEY", "OPENAI_BASE_URL"),
            key_variable="OPENAI_API_KEY", url_variable="OPENAI_BASE_URL",
            default_base_url=OPENAI_DEFAULT_BASE_URL, preferred_model="gpt-4o-mini", rank=10,
        ),
        EnvProvider(
            id="ollama", name="Ollama", enabled_by=("OLLAMA_BASE_URL",),
            url_variable="OLLAMA_BASE_URL", url_suffix="/v1", rank=30,
        ),
    ),
)
