"""Tool calls and structured answers of the `local` provider, decided without a model.

Which tools it calls: each declared tool (`tools`, or the older `functions`) is scored by the
words its name (split at `_`, `-` and capitals, each counting twice), its description and
its parameters' names share with the last user message. `tool_choice` decides from there:

- `none`: no call; `auto` (the default): the best-scoring tool if it scores above 0, else an
  answer in text; `required`: the best (on a tie, the first declared); a named tool: that one.
- With `parallel_tool_calls` (true unless the request says false), every tool scoring above 0
  is called, in the order declared, so a message that asks for two things gets both calls;
  otherwise only the best one. The older `functions` make one `function_call` at most.
- With `auto`, a tool whose arguments could not be made valid for its schema is not called.

When the conversation ends with tool results, the answer is text that names them, so a tool
loop ends. `response_format` `json_schema` gets a value valid for the schema; `json_object`
gets one valid for the JSON Schema the messages carry (clients that ask for JSON mode put the
schema in the prompt), else `{"answer": <the text answer>}`. Arguments and values come from `json_values`, seeded by the
conversation (and `seed`, and which of `n` choices), so the same request gets the same calls,
ids included.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gaia_app.providers.base import ChatRequest, ToolCall
from gaia_app.providers.common import count_tokens
from gaia_app.providers.json_values import schema_problem, value_for
from gaia_app.providers.local_words import STOPWORDS, Vocabulary, content_words, name_words

# How many characters of arguments or JSON content one streamed chunk carries.
PIECE_CHARS = 12
# How much of a tool's result the answer repeats.
RESULT_WORDS = 40


@dataclass(frozen=True)
class Reply:
    """One choice of a local answer: content (in the pieces a stream sends) or tool calls."""

    pieces: tuple[str, ...] = ()
    calls: tuple[ToolCall, ...] = ()
    # A `function_call` (the request declared `functions`) rather than `tool_calls`.
    legacy: bool = False
    finish_reason: str = "stop"

    @property
    def content(self) -> str | None:
        return None if self.calls else "".join(self.pieces)

    @property
    def tokens(self) -> int:
        if self.calls:
            return sum(count_tokens(call.name) + count_tokens(call.arguments) for call in self.calls)
        return count_tokens(self.content or "")

    def message(self) -> dict:
        """The choice's `message`, in Chat Completions' shape."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.calls and self.legacy:
            message["function_call"] = {"name": self.calls[0].name, "arguments": self.calls[0].arguments}
        elif self.calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
                for call in self.calls
            ]
        return message

    def role_delta(self) -> dict:
        return {"role": "assistant", "content": None if self.calls else ""}

    def deltas(self) -> Iterator[tuple[str, dict]]:
        """The streamed deltas after the role: (the text it adds, the delta)."""
        if not self.calls:
            for piece in self.pieces:
                yield piece, {"content": piece}
            return
        if self.legacy:
            call = self.calls[0]
            yield "", {"function_call": {"name": call.name, "arguments": ""}}
            for piece in _pieces(call.arguments):
                yield "", {"function_call": {"arguments": piece}}
            return
        for index, call in enumerate(self.calls):
            yield "", {"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                       "function": {"name": call.name, "arguments": ""}}]}
            for piece in _pieces(call.arguments):
                yield "", {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def _pieces(text: str) -> list[str]:
    return [text[at: at + PIECE_CHARS] for at in range(0, len(text), PIECE_CHARS)]


def text_reply(words: list[str], finish_reason: str) -> Reply:
    return Reply(pieces=tuple(word if at == 0 else " " + word for at, word in enumerate(words)),
                 finish_reason=finish_reason)


@dataclass(frozen=True)
class _Tool:
    name: str
    description: str
    parameters: Any


def _declared(options: Mapping) -> tuple[list[_Tool], bool]:
    """The tools the request declares, and whether they came as the older `functions`."""
    legacy = not options.get("tools") and bool(options.get("functions"))
    specs = options.get("functions") if legacy else [t.get("function", {}) for t in options.get("tools") or []]
    tools = [_Tool(spec["name"], spec.get("description") or "",
                   spec.get("parameters") if spec.get("parameters") is not None else {"type": "object", "properties": {}})
             for spec in specs or []]
    return tools, legacy


def _mode(options: Mapping, legacy: bool) -> tuple[str, str | None]:
    """(`none`, `auto`, `required` or `named`, the tool named)."""
    choice = options.get("function_call" if legacy else "tool_choice")
    if choice is None:
        return "auto", None
    if isinstance(choice, str):
        return choice, None
    named = choice.get("function", choice)
    return "named", named.get("name")


def _forces_a_call(options: Mapping) -> bool:
    tools, legacy = _declared(options)
    return bool(tools) and _mode(options, legacy)[0] in ("required", "named")


def score(tool: _Tool, message: set[str]) -> int:
    """How well a tool matches the message: shared words, those of its name counting twice,
    then those of its description and of its parameters' names."""
    named = set(name_words(tool.name)) - STOPWORDS
    properties = tool.parameters.get("properties") if isinstance(tool.parameters, Mapping) else None
    parameters = {word for key in (properties if isinstance(properties, Mapping) else ())
                  for word in name_words(str(key))} - STOPWORDS
    described = (content_words(tool.description) | parameters) - named
    return 2 * len(named & message) + len(described & message)


def _chosen(tools: list[_Tool], mode: str, named: str | None, parallel: bool, message: str) -> list[_Tool]:
    if mode == "none" or not tools:
        return []
    if mode == "named":
        return [tool for tool in tools if tool.name == named][:1]
    words = content_words(message)
    scores = [score(tool, words) for tool in tools]
    best = scores.index(max(scores))
    if mode == "auto" and scores[best] == 0:
        return []
    if not parallel:
        return [tools[best]]
    return [tool for tool, points in zip(tools, scores) if points > 0] or [tools[best]]


def last_user_text(request: ChatRequest) -> str:
    return next((m.content for m in reversed(request.messages) if m.role == "user"), "")


def _seeded(digest: bytes, what: str) -> random.Random:
    return random.Random(hashlib.sha256(digest + b"\x1f" + what.encode()).digest())


def prompt_schema(request: ChatRequest) -> dict | None:
    """For JSON mode (`json_object`): the schema the messages carry (`schema_in`), found once
    per request whatever `n` is; None otherwise."""
    wanted = request.options.get("response_format") or {}
    return schema_in(request.messages) if wanted.get("type") == "json_object" else None


def structured_reply(request: ChatRequest, digest: bytes, text: str, limit: int,
                     schema: dict | None = None) -> Reply | None:
    """Tool calls (unless the conversation ends with tool results and the request does not
    force a call, as `required` or a named tool does), else JSON when the request asks for
    it, else None: the answer is `text`. `schema`: `prompt_schema(request)`."""
    after_results = bool(request.messages) and request.messages[-1].role == "tool"
    if not after_results or _forces_a_call(request.options):
        calls = tool_reply(request, digest)
        if calls is not None:
            return calls
    return json_reply(request, digest, text, limit, schema)


def tool_reply(request: ChatRequest, digest: bytes) -> Reply | None:
    """The calls this request gets, or None when the answer is not a call."""
    tools, legacy = _declared(request.options)
    mode, named = _mode(request.options, legacy)
    parallel = request.options.get("parallel_tool_calls") is not False and not legacy
    message = last_user_text(request)
    calls = []
    for position, tool in enumerate(_chosen(tools, mode, named, parallel, message)):
        value, valid = value_for(tool.parameters, Vocabulary(message, avoid=name_words(tool.name)),
                                 _seeded(digest, "tool=" + tool.name))
        if not valid and mode == "auto":
            continue
        call_id = "call_" + hashlib.sha256(digest + f"\x1fcall={position}:{tool.name}".encode()).hexdigest()[:24]
        calls.append(ToolCall(call_id, tool.name, json.dumps(value, ensure_ascii=False, separators=(",", ":"))))
    if not calls:
        return None
    return Reply(calls=tuple(calls), legacy=legacy, finish_reason="function_call" if legacy else "tool_calls")


def json_reply(request: ChatRequest, digest: bytes, text: str, limit: int,
               schema: dict | None = None) -> Reply | None:
    """The answer as JSON when `response_format` asks for it (cut at `limit` tokens and at the
    first `stop` string, as any answer is), else None. JSON mode fills `schema` (the one the
    messages carry) when a valid object can be made for it, else gives `{"answer": text}`."""
    wanted = request.options.get("response_format") or {}
    if wanted.get("type") == "json_object":
        value: Any = {"answer": text}
        if schema is not None:
            made, valid = value_for(schema, Vocabulary(last_user_text(request)), _seeded(digest, "json"))
            value = made if valid and isinstance(made, dict) else value
    elif wanted.get("type") == "json_schema":
        schema = (wanted.get("json_schema") or {}).get("schema", {})
        value, _valid = value_for(schema, Vocabulary(last_user_text(request)), _seeded(digest, "json"))
    else:
        return None
    body = json.dumps(value, ensure_ascii=False)
    finish = "stop"
    if count_tokens(body) > limit:
        body, finish = _first_tokens(body, limit), "length"
    stop = request.options.get("stop")
    found = [body.find(s) for s in ([stop] if isinstance(stop, str) else stop or []) if s and s in body]
    if found:
        body, finish = body[: min(found)], "stop"
    return Reply(pieces=tuple(_pieces(body)), finish_reason=finish)


# The search for a JSON Schema in the messages (JSON mode): how many characters, counted over
# the whole conversation from its newest message back, how many places a JSON value may start
# at, and how many candidates are checked against the metaschema.
SCHEMA_SEARCH_CHARS = 64 * 1024
SCHEMA_SEARCH_STARTS = 200
SCHEMA_CANDIDATES = 4


def schema_in(messages) -> dict | None:
    """The last valid JSON Schema of an object (a JSON object with `properties` that passes
    its metaschema) written out in the messages, newest message first; else None.

    Bounded for the whole request, whatever the messages hold: their newest
    SCHEMA_SEARCH_CHARS characters, SCHEMA_SEARCH_STARTS attempts to read a JSON value, and
    SCHEMA_CANDIDATES metaschema checks.
    """
    decoder = json.JSONDecoder()
    chars, starts, checks = SCHEMA_SEARCH_CHARS, SCHEMA_SEARCH_STARTS, SCHEMA_CANDIDATES
    for message in reversed(messages):
        if chars <= 0 or starts <= 0 or checks <= 0:
            return None
        text = message.content[:chars]
        chars -= len(text)
        found, start = [], text.find("{")
        while start != -1 and starts > 0:
            starts -= 1
            try:
                value, end = decoder.raw_decode(text, start)
            except ValueError:
                start = text.find("{", start + 1)
                continue
            if isinstance(value, dict) and isinstance(value.get("properties"), dict):
                found.append(value)
            start = text.find("{", end)
        for candidate in reversed(found[-checks:]):
            checks -= 1
            if schema_problem(candidate) is None:
                return candidate
    return None


def _first_tokens(text: str, limit: int) -> str:
    """The longest start of `text` that counts at most `limit` tokens."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]


def results_lead(request: ChatRequest) -> str | None:
    """When the conversation ends with tool results: a sentence naming each, else None."""
    if not request.messages or request.messages[-1].role != "tool":
        return None
    wire = list(request.wire_messages or [])
    names = {call.get("id"): (call.get("function") or {}).get("name")
             for message in wire if message.get("role") == "assistant"
             for call in message.get("tool_calls") or [] if isinstance(call, Mapping)}
    sentences = []
    for index in range(len(request.messages) - 1, -1, -1):
        if request.messages[index].role != "tool":
            break
        sent = wire[index] if index < len(wire) else {}
        name = sent.get("name") or names.get(sent.get("tool_call_id")) or "the tool"
        words = request.messages[index].content.split()
        result = " ".join(words[:RESULT_WORDS]) + (" …" if len(words) > RESULT_WORDS else "")
        sentences.append(f"{name} returned: {result or '(nothing)'}".rstrip(".") + ".")
    return " ".join(reversed(sentences))
