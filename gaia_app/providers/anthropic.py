"""Anthropic's Messages API: system prompt apart, `max_tokens` required, its own SSE events.

Requests arrive in the OpenAI shape Gaia uses inside; `anthropic_request` turns them into a
Messages request (content blocks, tools, structured output by a forced tool) and
`anthropic_answer` turns the message or its stream events back into text chunks and usage,
and, for a /v1 client (`ChatRequest.relay`), into Chat Completions responses and chunk
events with tool calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from gaia_app.providers.anthropic_answer import StreamAnswer, completion
from gaia_app.providers.anthropic_request import MessagesRequest, Untranslatable, messages_request
from gaia_app.providers.base import (
    ChatRequest,
    Completion,
    EnvProvider,
    ModelInfo,
    ProviderDeclaration,
    ProviderError,
    ProviderKind,
    StreamChunk,
)
from gaia_app.providers.common import DEFAULT_CAPABILITIES, RemoteProvider

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
# Every current Claude model reads images, calls tools and (by a forced tool) answers in a
# JSON schema.
CAPABILITIES = (*DEFAULT_CAPABILITIES, "vision", "tools", "json_schema")
# Context window, output limit, USD per million input/output tokens (list prices).
ANTHROPIC_MODELS = {
    "claude-opus-4-1": (200_000, 32_000, 15.00, 75.00),
    "claude-sonnet-4-5": (200_000, 64_000, 3.00, 15.00),
    "claude-sonnet-4-0": (200_000, 64_000, 3.00, 15.00),
    "claude-haiku-4-5": (200_000, 64_000, 1.00, 5.00),
    "claude-3-5-haiku-latest": (200_000, 8_192, 0.80, 4.00),
}
# Error event types that mean "try elsewhere or later".
_RETRYABLE_EVENTS = {"overloaded_error": "unavailable", "api_error": "unavailable", "rate_limit_error": "rate_limited"}


class AnthropicProvider(RemoteProvider):
    kind = "anthropic"
    capabilities = CAPABILITIES

    def __init__(self, declaration: ProviderDeclaration, on_change=lambda: None, clock=None) -> None:
        headers = {"anthropic-version": API_VERSION}
        if declaration.api_key:
            headers["x-api-key"] = declaration.api_key
        super().__init__(declaration, headers, ANTHROPIC_MODELS, on_change, clock)

    def model(self, model_id: str, declared: Mapping | None = None) -> ModelInfo:
        """Claude's capabilities, unless the operator declared others."""
        if not declared or "capabilities" not in declared:
            declared = {**(declared or {}), "capabilities": CAPABILITIES}
        return super().model(model_id, declared)

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

    def _plan(self, request: ChatRequest) -> MessagesRequest:
        """The Messages request; what has no form in it is refused (naming the field) before
        anything is sent."""
        try:
            return messages_request(request, self._max_tokens(request))
        except Untranslatable as problem:
            raise ProviderError(self.id, "rejected", problem.message, param=problem.param) from None

    def _bad(self, what: str) -> ProviderError:
        return ProviderError(self.id, "bad_response", f"{self.id} sent {what}")

    def complete(self, request: ChatRequest) -> Completion:
        plan = self._plan(request)
        data = self.http.post_json("/v1/messages", plan.body)
        try:
            return completion(data, request, plan, self.id)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise self._bad("a message in an unknown shape") from None

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk]:
        plan = self._plan(request)
        response = self.http.request("POST", "/v1/messages", {**plan.body, "stream": True}, stream=True)
        events = self.http.events(response)
        answer = StreamAnswer(request, plan, self.id)
        try:
            for event, data in events:
                if answer.finished:
                    continue  # read on to the end of the body, so its connection is reused
                try:
                    payload = json.loads(data)
                    kind = payload.get("type", event)
                except (ValueError, AttributeError):
                    raise self._bad("a stream event that is not JSON") from None
                if kind == "error":
                    error = payload.get("error") or {}
                    raise ProviderError(
                        self.id,
                        _RETRYABLE_EVENTS.get(error.get("type"), "interrupted"),
                        f"{self.id} failed mid-answer: {error.get('message') or error.get('type')}",
                    )
                try:
                    chunks = answer.take(kind, payload)
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise self._bad("a stream event in an unknown shape") from None
                yield from chunks
        finally:
            events.close()
        yield from answer.end()


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
