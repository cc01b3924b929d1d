"""Anthropic's Messages API: system prompt apart, `max_tokens` required, its own SSE events.

Chat history arrives here in the OpenAI shape Gaia uses inside; this module turns it into a
Messages request (system messages lifted out, turns alternating from a user turn) and its
stream events (message_start, content_block_delta, message_delta, error, ...) back into text
chunks and usage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from gaia_app.providers.base import (
    ChatRequest,
    Completion,
    EnvProvider,
    ModelInfo,
    ProviderDeclaration,
    ProviderError,
    ProviderKind,
    StreamChunk,
    Usage,
)
from gaia_app.providers.common import RemoteProvider

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
# Context window, output limit, USD per million input/output tokens (list prices).
ANTHROPIC_MODELS = {
    "claude-opus-4-1": (200_000, 32_000, 15.00, 75.00),
    "claude-sonnet-4-5": (200_000, 64_000, 3.00, 15.00),
    "claude-sonnet-4-0": (200_000, 64_000, 3.00, 15.00),
    "claude-haiku-4-5": (200_000, 64_000, 1.00, 5.00),
    "claude-3-5-haiku-latest": (200_000, 8_192, 0.80, 4.00),
}
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
# Error event types that mean "try elsewhere or later".
_RETRYABLE_EVENTS = {"overloaded_error": "unavailable", "api_error": "unavailable", "rate_limit_error": "rate_limited"}


def to_messages_request(request: ChatRequest, max_tokens: int) -> dict:
    system = "\n\n".join(m.content for m in request.messages if m.role == "system")
    turns: list[dict] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            # The Messages API wants turns to alternate: join consecutive ones.
            turns[-1]["content"] += "\n\n" + message.content
        else:
            turns.append({"role": role, "content": message.content})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": "(The conversation so far.)"})
    body: dict = {"model": request.model, "max_tokens": max_tokens, "messages": turns}
    if system:
        body["system"] = system
    if request.temperature is not None:
        # Anthropic's range is 0-1; OpenAI's is 0-2.
        body["temperature"] = min(request.temperature, 1.0)
    return _with_options(body, request.options)


def _with_options(body: dict, options) -> dict:
    """The Chat Completions parameters `providers.params` lets through, in the Messages API's
    terms; fields Gaia does not know (vendor options such as `top_k`) go as they are."""
    for name, value in options.items():
        if name == "top_p":
            body["top_p"] = value
        elif name == "stop":
            body["stop_sequences"] = [value] if isinstance(value, str) else list(value)
        elif name == "user":
            body.setdefault("metadata", {})["user_id"] = value
        else:
            body[name] = value
    return body


class AnthropicProvider(RemoteProvider):
    kind = "anthropic"

    def __init__(self, declaration: ProviderDeclaration, on_change=lambda: None, clock=None) -> None:
        headers = {"anthropic-version": API_VERSION}
        if declaration.api_key:
            headers["x-api-key"] = declaration.api_key
        super().__init__(declaration, headers, ANTHROPIC_MODELS, on_change, clock)

    def _fetch_models(self) -> list[ModelInfo]:
        models: list[ModelInfo] = []
        after = None
        for _page in range(10):
            data = self.http.get_json("/v1/models?limit=1000" + (f"&after_id={after}" if after else ""))
            entries = data.get("data")
            if not isinstance(entries, list):
                raise ProviderError(self.id, "bad_response", f"{self.id} listed its models in an unknown shape")
            for entry in entries:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                    declared = {"name": entry.get("display_name")} if entry.get("display_name") else None
                    models.append(self.model(entry["id"], declared))
            if not data.get("has_more") or not data.get("last_id"):
                break
            after = data["last_id"]
        return models

    def _max_tokens(self, request: ChatRequest) -> int:
        if request.max_tokens is not None:
            return request.max_tokens
        model = self.live.get(request.model)
        return min(model.max_tokens or DEFAULT_MAX_TOKENS, DEFAULT_MAX_TOKENS) if model else DEFAULT_MAX_TOKENS

    def _bad(self, what: str) -> ProviderError:
        return ProviderError(self.id, "bad_response", f"{self.id} sent {what}")

    def complete(self, request: ChatRequest) -> Completion:
        data = self.http.post_json("/v1/messages", to_messages_request(request, self._max_tokens(request)))
        try:
            text = "".join(
                block.get("text", "") for block in data["content"] if block.get("type") == "text"
            )
            usage = Usage(int(data["usage"]["input_tokens"]), int(data["usage"]["output_tokens"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._bad("a message in an unknown shape") from None
        return Completion(
            text=text,
            model=str(data.get("model") or request.model),
            usage=usage,
            finish_reason=STOP_REASONS.get(data.get("stop_reason"), "stop"),
        )

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        body = to_messages_request(request, self._max_tokens(request))
        body["stream"] = True
        response = self.http.request("POST", "/v1/messages", body, stream=True)
        events = self.http.events(response)
        input_tokens = output_tokens = 0
        stop_reason = None
        finished = False
        try:
            for event, data in events:
                if finished:
                    continue  # read on to the end of the body, so its connection is reused
                try:
                    payload = json.loads(data)
                    kind = payload.get("type", event)
                except (ValueError, AttributeError):
                    raise self._bad("a stream event that is not JSON") from None
                if kind == "content_block_delta":
                    delta = payload.get("delta") or {}
                    if delta.get("type") == "text_delta" and delta.get("text"):
                        yield StreamChunk(text=delta["text"])
                elif kind == "message_start":
                    usage = (payload.get("message") or {}).get("usage") or {}
                    input_tokens = int(usage.get("input_tokens") or 0)
                    output_tokens = int(usage.get("output_tokens") or 0)
                elif kind == "message_delta":
                    stop_reason = (payload.get("delta") or {}).get("stop_reason") or stop_reason
                    output_tokens = int((payload.get("usage") or {}).get("output_tokens") or output_tokens)
                elif kind == "message_stop":
                    finished = True
                elif kind == "error":
                    error = payload.get("error") or {}
                    raise ProviderError(
                        self.id,
                        _RETRYABLE_EVENTS.get(error.get("type"), "interrupted"),
                        f"{self.id} failed mid-answer: {error.get('message') or error.get('type')}",
                    )
                # ping, content_block_start/stop and unknown future events need nothing.
        finally:
            events.close()
        if not finished:
            raise ProviderError(self.id, "interrupted", f"{self.id} ended its answer early")
        yield StreamChunk(
            usage=Usage(input_tokens, output_tokens),
            finish_reason=STOP_REASONS.get(stop_reason, "stop"),
        )


KIND = ProviderKind(
    kind="anthropic",
    adapter=AnthropicProvider,
    environment=(
        EnvProvider(
            id="anthropic", name="Anthropic", enabled_by=("ANTHROPIC_API_KEY",),
            key_variable="ANTHROPIC_API_KEY", url_variable="ANTHROPIC_BASE_URL",
            default_base_url="https://api.anthropic.com", preferred_model="claude-haiku-4-5", rank=20,
        ),
    ),
)
