"""Anthropic's answers in OpenAI's terms: a Messages API message as a Chat Completions
response, and its stream events (message_start, content_block_*, message_delta, ...) as
`chat.completion.chunk` events.

Text blocks are the content; `tool_use` blocks are `tool_calls` (or a legacy
`function_call`), each with its index among the answer's calls; the forced tool that stands
for `response_format` gives the content instead, its input as a JSON string. A tool call
whose input is not a JSON object is a `bad_response`: the client gets an error, not half an
answer.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from gaia_app.providers.anthropic_request import MessagesRequest
from gaia_app.providers.base import ChatRequest, Completion, ProviderError, StreamChunk, ToolCall, Usage

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                "tool_use": "tool_calls", "refusal": "content_filter"}


def _arguments(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def finish_reason(stop_reason: str | None, calls: int, legacy: bool) -> str:
    """The answer's finish reason: a call only when there is one (the answer tool is none)."""
    if calls:
        return "function_call" if legacy else "tool_calls"
    reason = STOP_REASONS.get(stop_reason, "stop")
    return "stop" if reason == "tool_calls" else reason


def _bad_input(provider: str, name: str) -> ProviderError:
    return ProviderError(provider, "bad_response",
                         f"{provider} sent a call of {name!r} whose input is not a JSON object")


def completion(data: dict, request: ChatRequest, plan: MessagesRequest, provider: str) -> Completion:
    """A Messages API message as a Completion (and, relayed, a Chat Completions response).
    Raises KeyError, TypeError, ... on a message in an unknown shape."""
    texts: list[str] = []
    calls: list[dict] = []
    for block in data["content"]:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            if not isinstance(block.get("input"), dict):
                raise _bad_input(provider, block.get("name"))
            if block["name"] == plan.answer_tool:
                texts.append(_arguments(block["input"]))
            else:
                calls.append({"id": block["id"], "type": "function",
                              "function": {"name": block["name"], "arguments": _arguments(block["input"])}})
    usage = Usage(int(data["usage"]["input_tokens"]), int(data["usage"]["output_tokens"]))
    text = "".join(texts)
    finish = finish_reason(data.get("stop_reason"), len(calls), plan.legacy_functions)
    raw = None
    if request.relay:
        message = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
        if calls and plan.legacy_functions:
            message["function_call"] = calls[0]["function"]
        elif calls:
            message["tool_calls"] = calls
        raw = {
            "id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
            "model": request.relay_model or request.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage.as_dict(),
        }
    tool_calls = tuple(ToolCall(call["id"], call["function"]["name"], call["function"]["arguments"])
                       for call in calls)
    return Completion(text=text, model=str(data.get("model") or request.model), usage=usage,
                      finish_reason=finish, raw=raw, tool_calls=tool_calls)


class _ChunkEvents:
    """`chat.completion.chunk` events of one answer, in OpenAI's shape."""

    def __init__(self, model: str) -> None:
        self.base = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model}

    @staticmethod
    def _event(body: dict) -> bytes:
        return b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"

    def chunk(self, delta: dict, finish: str | None = None) -> bytes:
        return self._event({**self.base, "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    def usage(self, usage: Usage) -> bytes:
        return self._event({**self.base, "choices": [], "usage": usage.as_dict()})


@dataclass
class _Block:
    """One content block of a streamed message, as far as it has come."""

    kind: str  # "text", "call" (a tool call for the client), "answer" (the response format's)
    name: str = ""
    call_index: int = 0
    pieces: list[str] = field(default_factory=list)
    call_id: str = ""


class StreamAnswer:
    """Reads one streamed message's events (`take`), giving the chunks to send; `end` gives
    the last ones. Relayed, every chunk carries its OpenAI event (`StreamChunk.raw`)."""

    def __init__(self, request: ChatRequest, plan: MessagesRequest, provider: str) -> None:
        self.request = request
        self.plan = plan
        self.provider = provider
        self.events = _ChunkEvents(request.relay_model or request.model) if request.relay else None
        self.blocks: dict[int, _Block] = {}
        self.calls = 0
        self.input_tokens = self.output_tokens = 0
        self.stop_reason: str | None = None
        self.finished = False

    def _content(self, piece: str) -> list[StreamChunk]:
        if not piece:
            return []
        return [StreamChunk(text=piece, raw=self.events.chunk({"content": piece}) if self.events else None)]

    def _call_delta(self, call: dict) -> list[StreamChunk]:
        if self.events is None:
            return []
        if self.plan.legacy_functions:
            delta = {"function_call": {key: value for key, value in call["function"].items()}}
        else:
            delta = {"tool_calls": [call]}
        return [StreamChunk(raw=self.events.chunk(delta))]

    def take(self, kind: str, payload: dict) -> list[StreamChunk]:
        """The chunks one event gives. Raises KeyError, TypeError, ... on an unknown shape."""
        if kind == "message_start":
            usage = payload["message"].get("usage") or {}
            self.input_tokens = int(usage.get("input_tokens") or 0)
            self.output_tokens = int(usage.get("output_tokens") or 0)
            if self.events is None:
                return []
            return [StreamChunk(raw=self.events.chunk({"role": "assistant", "content": "", "refusal": None}))]
        if kind == "content_block_start":
            return self._start(payload["index"], payload["content_block"])
        if kind == "content_block_delta":
            return self._delta(self.blocks.get(payload["index"]), payload["delta"])
        if kind == "content_block_stop":
            return self._stop(self.blocks.get(payload["index"]))
        if kind == "message_delta":
            self.stop_reason = (payload.get("delta") or {}).get("stop_reason") or self.stop_reason
            self.output_tokens = int((payload.get("usage") or {}).get("output_tokens") or self.output_tokens)
        elif kind == "message_stop":
            self.finished = True
        # ping, and blocks or events Gaia does not relay (thinking), need nothing.
        return []

    def _start(self, index: int, block: dict) -> list[StreamChunk]:
        if block.get("type") == "text":
            self.blocks[index] = _Block("text")
            return self._content(block.get("text") or "")
        if block.get("type") != "tool_use":
            return []
        if block["name"] == self.plan.answer_tool:
            self.blocks[index] = _Block("answer", block["name"])
            return []
        self.blocks[index] = _Block("call", block["name"], self.calls, call_id=block["id"])
        self.calls += 1
        return self._call_delta({"index": self.calls - 1, "id": block["id"], "type": "function",
                                 "function": {"name": block["name"], "arguments": ""}})

    def _delta(self, block: _Block | None, delta: dict) -> list[StreamChunk]:
        if block is None:
            return []
        if delta.get("type") == "text_delta" and block.kind == "text":
            return self._content(delta.get("text") or "")
        if delta.get("type") != "input_json_delta" or block.kind == "text":
            return []
        piece = delta.get("partial_json") or ""
        block.pieces.append(piece)
        return self._arguments(block, piece)

    def _arguments(self, block: _Block, piece: str) -> list[StreamChunk]:
        if not piece:
            return []
        if block.kind == "answer":
            return self._content(piece)
        return self._call_delta({"index": block.call_index, "function": {"arguments": piece}})

    def _stop(self, block: _Block | None) -> list[StreamChunk]:
        """A tool's input is whole: it must be a JSON object (none at all reads as `{}`)."""
        if block is None or block.kind == "text":
            return []
        whole = "".join(block.pieces)
        if not whole.strip():
            block.pieces = ["{}"]
            return self._arguments(block, "{}")
        try:
            value = json.loads(whole)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise _bad_input(self.provider, block.name)
        return []

    def end(self) -> list[StreamChunk]:
        """After the last event: the finish (and, when asked for, usage) chunks, then the
        plain chunk with usage and finish reason."""
        if not self.finished:
            raise ProviderError(self.provider, "interrupted", f"{self.provider} ended its answer early")
        usage = Usage(self.input_tokens, self.output_tokens)
        finish = finish_reason(self.stop_reason, self.calls, self.plan.legacy_functions)
        chunks = []
        if self.events is not None:
            chunks.append(StreamChunk(raw=self.events.chunk({}, finish)))
            if self.request.relay_usage:
                chunks.append(StreamChunk(raw=self.events.usage(usage)))
        calls = sorted((block for block in self.blocks.values() if block.kind == "call"),
                       key=lambda block: block.call_index)
        tool_calls = tuple(ToolCall(block.call_id, block.name, "".join(block.pieces)) for block in calls)
        return [*chunks, StreamChunk(usage=usage, finish_reason=finish, tool_calls=tool_calls)]
