"""Loopback fakes of the OpenAI Chat Completions and Anthropic Messages HTTP APIs.

The chat service has to be tested against what the providers really put on the wire (JSON
shapes, SSE framing, error bodies, rate-limit headers) and against the ways real networks
fail (slow first token, streams cut off halfway, hangs, garbage), without internet access or
API keys. Each fake is a small standard-library HTTP/1.1 server on 127.0.0.1 that records
every request and answers as the current `Behaviour` says.

"Tokens" are whitespace-separated words, so tests can predict usage numbers and truncation;
a reply is streamed one word per chunk, which normalises its whitespace to single spaces.

Both fakes check tools, tool choices, tool calls and results (and Anthropic's image blocks)
as the real APIs do, and answer with tool calls when a `Behaviour` asks for them or the
request forces a tool: in JSON, and streamed with each call's arguments in several pieces.
"""

from __future__ import annotations

import base64
import json
import re
import select
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.loopback import LoopbackHandler, LoopbackServer

GARBAGE = b'{"id": "oops", <html><body>502 Bad Gateway</body></html>'


@dataclass
class Behaviour:
    """How a fake answers one request; GET /v1/models honours status, hang, delay and garbage.

    Every request (models listing included) takes one from `queue` while it is non-empty.
    `hang` wins over everything; a wrong key still gets its 401 before `status` applies.
    A stream with `fail_after_chunks` always fails, after the last word if the reply is short.
    """

    reply: str | None = None  # None: f"Hello from {kind}. You said: {last user message}"
    status: int | None = None  # answer with this HTTP error status and the provider's body
    retry_after: float | None = None  # `retry-after` header (seconds) sent with `status`
    # Stream: wait after the headers and preamble (OpenAI's role chunk; Anthropic's
    # message_start, content_block_start, ping), before the first word. Else: before answering.
    first_token_delay: float = 0.0
    # GET /v1/models waits this long; None: as long as `first_token_delay`.
    models_delay: float | None = None
    chunk_delay: float = 0.0  # stream: pause between content chunks
    fail_after_chunks: int | None = None  # stream: break after this many content chunks
    hang: bool = False  # read the request, never answer (until stop() or the client leaves)
    garbage: bool = False  # 200 whose body / SSE data is not JSON
    # With a 4xx `status`: the error object's message, `code` and `param` (OpenAI's shape).
    error: tuple[str, str | None, str | None] | None = None
    # Answer with these tool calls, (name, input) each: after the reply's text when `reply`
    # is set, else without text. An input that is not an object goes out as it is (a provider
    # misbehaving). A request that forces a tool gets its entry here, else an input made from
    # the tool's schema.
    tool_calls: list[tuple[str, object]] | None = None


class _Error(NamedTuple):
    status: int
    body: dict
    headers: list


class _Abort(Exception):
    """Unwinds a request whose connection has to be dropped (stopping, client gone, failure)."""


def _text_of(content) -> str:
    """Message content is a string or a list of typed parts; only text parts carry words."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return " ".join(p["text"] for p in content if isinstance(p, dict)
                    and p.get("type") == "text" and isinstance(p.get("text"), str))


def _seconds(value: float) -> str:
    """Retry-After is delta-seconds; clients parse "2" more readily than "2.0"."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def example_of(schema, root=None):
    """A value that fits a JSON schema (the parts of JSON Schema that tools use)."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return example_of(target, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_of(schema[key][0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {name: example_of(sub, root) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_of(schema.get("items") or {}, root)]
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, "text")


def _pieces(text: str, size: int = 6) -> list[str]:
    """A call's arguments as they are streamed: in several pieces."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


class _Call(NamedTuple):
    id: str
    name: str
    input: object

    @property
    def arguments(self) -> str:
        return json.dumps(self.input)


class _Handler(LoopbackHandler):
    """Transport only (framing, pauses, failure detection); the fakes decide the content."""

    fake: _FakeServer

    def do_GET(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        split = urlsplit(self.path)
        self.request_id = "req_" + uuid.uuid4().hex[:24]
        self.behaviour = self.fake._take({
            "method": self.command, "path": split.path, "query": dict(parse_qsl(split.query)),
            "headers": {k.lower(): v for k, v in self.headers.items()}, "json": body,
            # The client's (address, port): the same for requests on one kept-alive connection.
            "client": tuple(self.client_address)})
        try:
            if self.behaviour.hang:
                self._hang()
            else:
                self.fake._handle(self, split.path, body)
        except _Abort:
            self.close_connection = True
            try:  # the client sees a dropped connection / an incomplete chunked body
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    do_POST = do_GET

    def _hang(self):
        """Wait for stop() or for the client to close its end, without ever answering."""
        while not self.server.stopping.wait(0.05):
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    break
            except OSError:
                break
        raise _Abort

    def pause(self, seconds: float):
        if self.server.stopping.wait(seconds) if seconds > 0 else self.server.stopping.is_set():
            raise _Abort

    def send_raw(self, status: int, data: bytes, ctype: str, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in [(self.fake._id_header, self.request_id), *headers]:
            self.send_header(name, value)
        self._write(self.end_headers)
        self._write(lambda: self.wfile.write(data))

    def send_json(self, status: int, obj, headers=()):
        self.send_raw(status, json.dumps(obj).encode(), "application/json", headers)

    def _write(self, write, stream: bool = False):
        """All writes go through here, so a client that went away is counted exactly once."""
        try:
            write()
        except OSError as exc:
            if stream and isinstance(exc, ConnectionError) and not self.server.stopping.is_set():
                self.fake._count("disconnects")
            raise _Abort from exc

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header(self.fake._id_header, self.request_id)
        self._write(self.end_headers, stream=True)

    def event(self, data: bytes):
        """One SSE event per HTTP chunk, on the wire at once (wfile is unbuffered)."""
        self._write(lambda: self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data)), stream=True)

    def end_stream(self):
        self._write(lambda: self.wfile.write(b"0\r\n\r\n"), stream=True)


class _FakeServer(LoopbackServer):
    """What both fakes share: lifecycle, recording, behaviours, token maths, streaming.

    Provider hooks: _chat_path, _id_header, _garbage_events, _error(), _auth_error(h),
    _forced_error(b), _models_body(), _validate(body) -> _Error or (input texts, last user
    text, word limit or None), _tools_asked(body) -> (tool schemas by name, the forced tool's
    name ("" for any tool) or None, one call only), _call_id(), _message(...),
    _stream_events(...) -> (head, deltas, tail) encoded SSE events, and _fail_stream(h),
    which must raise _Abort.
    """

    kind = "provider"
    handler = _Handler

    def __init__(self, models, api_key: str):
        self.models = list(models)
        self.api_key = api_key
        self.requests: list[dict] = []
        self.behaviour = Behaviour()
        self.queue: list[Behaviour] = []
        self.disconnects = self.stream_finished = 0
        super().__init__()

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.queue.clear()
            self.disconnects = self.stream_finished = 0
            self.behaviour = Behaviour()

    def _take(self, record: dict) -> Behaviour:
        with self._lock:
            self.requests.append(record)
            return self.queue.pop(0) if self.queue else self.behaviour

    def _count(self, name: str):
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def _handle(self, h: _Handler, path: str, body):
        b = h.behaviour
        error = self._auth_error(h) or (self._forced_error(b) if b.status is not None else None)
        if error is None and (h.command, path) == ("GET", "/v1/models"):
            h.pause(b.first_token_delay if b.models_delay is None else b.models_delay)
            if b.garbage:
                return h.send_raw(200, GARBAGE, "application/json")
            return h.send_json(200, self._models_body())
        if error is None and (h.command, path) != ("POST", self._chat_path):
            error = self._error(404, f"Invalid URL ({h.command} {path})", "invalid_request_error")
        if error is None and not isinstance(body, dict):
            error = self._error(400, "The request body is not valid JSON.", "invalid_request_error")
        if error is None:
            error = self._validate(body)
            if not isinstance(error, _Error):
                return self._create(h, body, *error)
        if "request_id" in error.body:  # Anthropic repeats its request-id header in error bodies
            error.body["request_id"] = h.request_id
        h.send_json(*error)

    def _calls(self, body: dict, b: Behaviour) -> list[_Call]:
        """The tool calls to answer with: the Behaviour's, or the one a forced tool needs."""
        schemas, forced, one = self._tools_asked(body)
        wanted = list(b.tool_calls or ())
        if forced == "":  # any tool
            wanted = wanted or [(name, example_of(schema)) for name, schema in list(schemas.items())[:1]]
        elif forced is not None:
            wanted = [c for c in wanted if c[0] == forced] or [(forced, example_of(schemas.get(forced)))]
        calls = [_Call(self._call_id(), name, value) for name, value in wanted]
        return calls[:1] if one else calls

    def _create(self, h: _Handler, body: dict, inputs: list[str], last_user: str, limit):
        b = h.behaviour
        calls = self._calls(body, b)
        default = "" if calls else f"Hello from {self.kind}. You said: {last_user}"
        words = (b.reply if b.reply is not None else default).split()
        truncated = limit is not None and len(words) > limit
        words = words[:limit] if truncated else words
        prompt_tokens = sum(len(text.split()) for text in inputs)
        completion_tokens = len(words) + sum(len(c.arguments.split()) for c in calls)
        if not body.get("stream"):
            h.pause(b.first_token_delay)
            if b.garbage:
                return h.send_raw(200, GARBAGE, "application/json")
            return h.send_json(200, self._message(body, " ".join(words), truncated, prompt_tokens,
                                                  completion_tokens, calls))
        h.start_stream()
        if b.garbage:
            tail = self._garbage_events
        else:
            pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
            head, deltas, tail = self._stream_events(body, pieces, truncated, prompt_tokens, calls)
            for event in head:
                h.event(event)
            h.pause(b.first_token_delay)
            fail = b.fail_after_chunks
            for i, event in enumerate(deltas if fail is None else deltas[:fail]):
                if i:
                    h.pause(b.chunk_delay)
                h.event(event)
            if fail is not None:  # such a stream never finishes, even if the reply is short
                self._fail_stream(h)
        for event in tail:
            h.event(event)
        h.end_stream()
        self._count("stream_finished")


class FakeOpenAI(_FakeServer):
    """OpenAI Chat Completions (https://platform.openai.com/docs/api-reference/chat)."""

    kind = "openai"
    _chat_path = "/v1/chat/completions"
    _id_header = "x-request-id"
    _garbage_events = [b"data: this is not JSON {\n\n", b"data: <html>oops</html>\n\n",
                       b"data: [DONE]\n\n"]
    _ROLES = {"system", "developer", "user", "assistant", "tool", "function"}

    def __init__(self, models=("gpt-4o-mini", "gpt-4o"), api_key="sk-fake-openai"):
        super().__init__(models, api_key)

    def _error(self, status, message, type_, code=None, param=None, headers=()):
        error = {"message": message, "type": type_, "param": param, "code": code}
        return _Error(status, {"error": error}, list(headers))

    def _auth_error(self, h):
        given = h.headers.get("Authorization", "")
        key = given[7:] if given.startswith("Bearer ") else ""
        if key == self.api_key:
            return None
        shown = key[:3] + "*" * (len(key) - 7) + key[-4:] if len(key) > 7 else key
        return self._error(401, f"Incorrect API key provided: {shown}. You can find your API "
                                "key at https://platform.openai.com/account/api-keys.",
                           "invalid_request_error", "invalid_api_key")

    def _forced_error(self, b):
        headers = [] if b.retry_after is None else [("retry-after", _seconds(b.retry_after))]
        if b.status == 429:
            headers += [("x-ratelimit-limit-requests", "60"),
                        ("x-ratelimit-remaining-requests", "0"),
                        ("x-ratelimit-reset-requests", f"{_seconds(b.retry_after or 1)}s")]
            return self._error(429, "Rate limit reached for requests", "requests",
                               "rate_limit_exceeded", headers=headers)
        if b.status >= 500:
            message = "The server had an error while processing your request."
            type_ = "server_error"
        elif b.error is not None:
            message, code, param = b.error
            return self._error(b.status, message, "invalid_request_error", code, param, headers=headers)
        else:
            message, type_ = "Invalid request.", "invalid_request_error"
        return self._error(b.status, message, type_, headers=headers)

    def _models_body(self):
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": "openai"}
            for m in self.models]}

    def _validate(self, body):
        model, messages = body.get("model"), body.get("messages")
        listed = isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
        limits = [body[n] for n in ("max_completion_tokens", "max_tokens")
                  if body.get(n) is not None]
        checks = [  # (failed, message, code, param); the first failure wins
            (not model, "you must provide a model parameter", None, None),
            (messages is None, "Missing required parameter: 'messages'.",
             "missing_required_parameter", "messages"),
            (not listed or not messages, "Invalid 'messages': empty array. Expected an array with "
             "minimum length 1, but got an empty array instead.", "empty_array", "messages"),
            (any(m.get("role") not in self._ROLES for m in messages or []),
             f"Invalid 'messages[].role'. Supported values are: {sorted(self._ROLES)}.",
             "invalid_value", "messages"),
            (not all(_positive_int(n) for n in limits), "Invalid 'max_tokens': integer below "
             "minimum value. Expected a value >= 1.", "integer_below_min_value", "max_tokens"),
        ]
        for failed, message, code, param in checks:
            if failed:
                return self._error(400, message, "invalid_request_error", code, param)
        for failed, message, code, param in self._tool_checks(body, messages):
            if failed:
                return self._error(400, message, "invalid_request_error", code, param)
        if model not in self.models:
            return self._error(404, f"The model `{model}` does not exist or you do not have "
                                    "access to it.", "invalid_request_error", "model_not_found")
        texts = [_text_of(m.get("content")) for m in messages]
        users = [t for m, t in zip(messages, texts) if m["role"] == "user"]
        return texts, users[-1] if users else "", limits[0] if limits else None

    def _tool_checks(self, body, messages):
        """Tools, tool choices, tool calls and their results, as the real API checks them."""
        tools = body.get("tools") if isinstance(body.get("tools"), list) else []
        functions = [t.get("function") for t in tools if isinstance(t, dict)]
        functions += body.get("functions") if isinstance(body.get("functions"), list) else []
        names = [f.get("name") for f in functions if isinstance(f, dict)]
        choice = body.get("tool_choice", body.get("function_call"))
        named = choice.get("function", choice) if isinstance(choice, dict) else None
        named = named.get("name") if isinstance(named, dict) else None
        checks = [(not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict)
                   or not isinstance(t["function"].get("name"), str),
                   f"Missing required parameter: 'tools[{i}].function.name'.", "missing_required_parameter",
                   f"tools[{i}]") for i, t in enumerate(tools)]
        checks.append((isinstance(choice, dict) and named not in names,
                       f"Invalid value for 'tool_choice': no function named {named!r} was specified in "
                       "the 'tools' parameter.", "invalid_value", "tool_choice"))
        shape = body.get("response_format")
        spec = shape.get("json_schema") if isinstance(shape, dict) else None
        checks.append((isinstance(shape, dict) and shape.get("type") == "json_schema"
                       and not (isinstance(spec, dict) and isinstance(spec.get("name"), str)),
                       "Missing required parameter: 'response_format.json_schema.name'.",
                       "missing_required_parameter", "response_format.json_schema.name"))
        called: set = set()
        for i, m in enumerate(messages):
            calls = m.get("tool_calls") if m.get("role") == "assistant" else None
            for j, call in enumerate(calls if isinstance(calls, list) else ()):
                function = call.get("function") if isinstance(call, dict) else None
                checks.append((not isinstance(function, dict) or not isinstance(function.get("arguments"), str),
                               f"Missing required parameter: 'messages[{i}].tool_calls[{j}].function.arguments'.",
                               "missing_required_parameter", f"messages[{i}].tool_calls[{j}].function.arguments"))
                called.add(call.get("id") if isinstance(call, dict) else None)
            checks.append((m.get("role") == "tool" and m.get("tool_call_id") not in called,
                           "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                           "message with 'tool_calls'.", None, f"messages.[{i}].role"))
        return checks

    def _tools_asked(self, body):
        tools = [t["function"] for t in body.get("tools") or ()] + list(body.get("functions") or ())
        schemas = {f["name"]: f.get("parameters") or {"type": "object", "properties": {}} for f in tools}
        choice = body.get("tool_choice", body.get("function_call"))
        forced = "" if choice == "required" else None
        if isinstance(choice, dict):
            forced = choice.get("function", choice)["name"]
        return schemas, forced, body.get("parallel_tool_calls") is False or "functions" in body

    @staticmethod
    def _call_id():
        return "call_" + uuid.uuid4().hex[:24]

    @staticmethod
    def _finish(body, truncated, calls):
        if calls:
            return "tool_calls" if "functions" not in body else "function_call"
        return "length" if truncated else "stop"

    def _message(self, body, text, truncated, prompt_tokens, completion_tokens, calls):
        message = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
        if calls and "functions" in body:
            message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments}
        elif calls:
            message["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                "name": c.name, "arguments": c.arguments}} for c in calls]
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion",
            "created": int(time.time()), "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": self._finish(body, truncated, calls)}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "system_fingerprint": "fp_fake",
        }

    @staticmethod
    def _call_deltas(body, calls) -> list[dict]:
        """Each call: its id and name, then its arguments in several pieces, with its index."""
        deltas = []
        for index, call in enumerate(calls):
            if "functions" in body:
                deltas.append({"function_call": {"name": call.name, "arguments": ""}})
                deltas += [{"function_call": {"arguments": p}} for p in _pieces(call.arguments)]
                continue
            deltas.append({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                           "function": {"name": call.name, "arguments": ""}}]})
            deltas += [{"tool_calls": [{"index": index, "function": {"arguments": p}}]}
                       for p in _pieces(call.arguments)]
        return deltas

    def _stream_events(self, body, pieces, truncated, prompt_tokens, calls):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"],
                "system_fingerprint": "fp_fake"}

        def chunk(delta, finish=None, usage=None, choices=True):
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            obj = {**base, "choices": [choice] if choices else []}
            if include_usage:  # the real API then adds "usage": null to every other chunk
                obj["usage"] = usage
            return b"data: " + json.dumps(obj).encode() + b"\n\n"

        head = [chunk({"role": "assistant", "content": "", "refusal": None})]
        tail = [chunk({}, self._finish(body, truncated, calls))]
        if include_usage:
            completion = len(pieces) + sum(len(c.arguments.split()) for c in calls)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                     "total_tokens": prompt_tokens + completion}
            tail.append(chunk(None, usage=usage, choices=False))
        deltas = [{"content": p} for p in pieces] + self._call_deltas(body, calls)
        return head, [chunk(d) for d in deltas], [*tail, b"data: [DONE]\n\n"]

    def _fail_stream(self, h):
        raise _Abort  # OpenAI streams just break off: no error event, no final chunk


class FakeAnthropic(_FakeServer):
    """Anthropic Messages (https://docs.anthropic.com/en/api/messages, .../messages-streaming)."""

    kind = "anthropic"
    _chat_path = "/v1/messages"
    _id_header = "request-id"
    _garbage_events = [b"event: message_start\ndata: this is not JSON {\n\n",
                       b"event: content_block_delta\ndata: <html>oops</html>\n\n"]
    _ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}

    def __init__(self, models=("claude-sonnet-4-5", "claude-haiku-4-5"), api_key="sk-ant-fake"):
        super().__init__(models, api_key)

    def _error(self, status, message, type_=None, headers=()):
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        type_ = self._ERROR_TYPES.get(status, fallback)
        return _Error(status, {"type": "error", "error": {"type": type_, "message": message},
                               "request_id": None}, list(headers))

    def _auth_error(self, h):
        if h.headers.get("x-api-key") != self.api_key:
            return self._error(401, "invalid x-api-key")
        if not h.headers.get("anthropic-version"):
            return self._error(400, "anthropic-version: header is required")
        return None

    def _forced_error(self, b):
        headers = [] if b.retry_after is None else [("retry-after", _seconds(b.retry_after))]
        if b.status == 429:
            reset = datetime.now(timezone.utc) + timedelta(seconds=b.retry_after or 1)
            headers += [("anthropic-ratelimit-requests-limit", "50"),
                        ("anthropic-ratelimit-requests-remaining", "0"),
                        ("anthropic-ratelimit-requests-reset", f"{reset:%Y-%m-%dT%H:%M:%SZ}")]
        message = {429: "Number of requests has exceeded your per-minute rate limit.",
                   529: "Overloaded"}.get(b.status, "Internal server error")
        return self._error(b.status, message, headers=headers)

    def _models_body(self):
        def display(model_id: str) -> str:  # "claude-sonnet-4-5" -> "Claude Sonnet 4.5"
            return re.sub(r"(?<=\d)-(?=\d)", ".", model_id).replace("-", " ").title()

        data = [{"type": "model", "id": m, "display_name": display(m),
                 "created_at": "2025-01-01T00:00:00Z"} for m in self.models]
        return {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    def _validate(self, body):
        model, messages, system = body.get("model"), body.get("messages"), body.get("system")
        listed = isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
        roles = [m.get("role") for m in messages] if listed else []
        checks = [  # in the order the real API reports them; the first failure wins
            (not model, "model: Field required"),
            ("max_tokens" not in body, "max_tokens: Field required"),
            (not _positive_int(body.get("max_tokens", 1)),
             "max_tokens: Input should be greater than or equal to 1"),
            (not listed or not messages, "messages: at least one message is required"),
            ("system" in roles, 'messages: Unexpected role "system". The Messages API accepts '
             'a top-level `system` parameter, not "system" as an input message role.'),
            (not set(roles) <= {"user", "assistant"},
             "messages: roles must be 'user' or 'assistant'"),
            (listed and not all(isinstance(m.get("content"), (str, list)) for m in messages),
             "messages: content must be a string or a list of content blocks"),
            (roles[:1] == ["assistant"], 'messages: first message must use the "user" role'),
            (not isinstance(system, (str, list, type(None))),
             "system: Input should be a valid string"),
        ]
        problem = next((message for failed, message in checks if failed), None)
        problem = problem or self._tools_problem(body) or self._blocks_problem(messages)
        if problem:
            return self._error(400, problem)
        if model not in self.models:
            return self._error(404, f"model: {model}")
        users = [_text_of(m["content"]) for m in messages if m["role"] == "user"]
        texts = [_text_of(system)] + [_text_of(m["content"]) for m in messages]
        return texts, users[-1], body["max_tokens"]

    _TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
    _IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

    def _tools_problem(self, body):
        tools, choice = body.get("tools"), body.get("tool_choice")
        if tools is not None and not isinstance(tools, list):
            return "tools: Input should be a valid list"
        names = []
        for i, tool in enumerate(tools or ()):
            if not isinstance(tool, dict) or not self._TOOL_NAME.fullmatch(str(tool.get("name"))):
                return f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return f"tools.{i}.custom.input_schema.type: Input should be 'object'"
            names.append(tool["name"])
        if len(set(names)) != len(names):
            return "tools: Tool names must be unique."
        if choice is None:
            return None
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            return (f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
                    "expected tags: 'auto', 'any', 'tool', 'none'")
        if not names and kind != "none":
            return "tool_choice: tool_choice may only be specified while providing tools."
        if kind == "tool" and choice.get("name") not in names:
            return f"tool_choice.name: Tool '{choice.get('name')}' not found in provided tools"
        return None

    def _block_problem(self, block, role, where):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            return None if isinstance(block.get("text"), str) and block["text"] else \
                "messages: text content blocks must be non-empty"
        if kind == "image":
            source = block.get("source") if isinstance(block.get("source"), dict) else {}
            if source.get("type") == "url":
                return None if isinstance(source.get("url"), str) else f"{where}.source.url: Field required"
            if source.get("type") != "base64" or source.get("media_type") not in self._IMAGE_TYPES:
                return (f"{where}.source.base64.media_type: Input should be 'image/jpeg', 'image/png', "
                        "'image/gif' or 'image/webp'")
            try:
                base64.b64decode(source.get("data") or "", validate=True)
            except ValueError:
                return f"{where}.source.base64.data: The image data is not valid base64"
            return None
        if kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not self._TOOL_NAME.fullmatch(str(block.get("name"))):
                return f"{where}.tool_use: id and name are required"
            return None if isinstance(block.get("input"), dict) else \
                f"{where}.tool_use.input: Input should be a valid dictionary"
        if kind == "tool_result" and role == "user":
            return None if isinstance(block.get("tool_use_id"), str) else f"{where}.tool_use_id: Field required"
        return (f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected "
                f"tags for a {role} message")

    def _blocks_problem(self, messages):
        """Content blocks, and every tool_use answered by a tool_result in the next message."""
        called: list[str] = []
        for i, message in enumerate(messages):
            content = message["content"] if isinstance(message["content"], list) else []
            for j, block in enumerate(content):
                problem = self._block_problem(block, message["role"], f"messages.{i}.content.{j}")
                if problem:
                    return problem
            results = [b["tool_use_id"] for b in content if b["type"] == "tool_result"]
            for j, block in enumerate(content):
                if block["type"] == "tool_result" and block["tool_use_id"] not in called:
                    return (f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                            f"blocks: {block['tool_use_id']}. Each `tool_result` block must have a "
                            "corresponding `tool_use` block in the previous message.")
            unanswered = [c for c in called if c not in results]
            if unanswered:
                return (f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                        f"immediately after: {', '.join(unanswered)}. Each `tool_use` block must have a "
                        "corresponding `tool_result` block in the next message.")
            called = [b["id"] for b in content if b["type"] == "tool_use"]
        return None

    def _tools_asked(self, body):
        schemas = {t["name"]: t["input_schema"] for t in body.get("tools") or ()}
        choice = body.get("tool_choice") or {}
        forced = {"any": "", "tool": choice.get("name")}.get(choice.get("type"))
        return schemas, forced, bool(choice.get("disable_parallel_tool_use"))

    @staticmethod
    def _call_id():
        return "toolu_" + uuid.uuid4().hex[:24]

    def _message(self, body, text, truncated, prompt_tokens, completion_tokens, calls=()):
        content = [{"type": "text", "text": text}] if text or not calls else []
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.input} for c in calls]
        stop_reason = "max_tokens" if truncated else "tool_use" if calls else "end_turn"
        return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
                "model": body["model"], "content": content,
                "stop_reason": stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens}}

    @staticmethod
    def _event(obj: dict) -> bytes:
        return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()

    @staticmethod
    def _call_events(calls, first: int) -> list[dict]:
        """Each call as a tool_use block: its start, its input in several pieces, its stop."""
        events = []
        for index, call in enumerate(calls, start=first):
            events.append({"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": call.id, "name": call.name, "input": {}}})
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": p}}
                       for p in ["", *_pieces(call.arguments)]]
            events.append({"type": "content_block_stop", "index": index})
        return events

    def _stream_events(self, body, pieces, truncated, prompt_tokens, calls=()):
        start = self._message(body, "", False, prompt_tokens, 1)
        start.update(content=[], stop_reason=None)
        text = bool(pieces) or not calls
        head = [{"type": "message_start", "message": start},
                *([{"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}] if text else []),
                {"type": "ping"}]
        deltas = [{"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": p}} for p in pieces]
        text_stop = [{"type": "content_block_stop", "index": 0}] if text else []
        if calls:
            deltas += text_stop + self._call_events(calls, 1 if text else 0)
            text_stop = []
        stop_reason = "max_tokens" if truncated else "tool_use" if calls else "end_turn"
        output = len(pieces) + sum(len(c.arguments.split()) for c in calls)
        tail = [*text_stop,
                {"type": "message_delta", "delta": {"stop_reason": stop_reason,
                                                    "stop_sequence": None},
                 "usage": {"output_tokens": output}},
                {"type": "message_stop"}]
        return tuple([self._event(e) for e in events] for events in (head, deltas, tail))

    def _fail_stream(self, h):
        """The real API reports mid-stream trouble as an SSE error event, then ends the body."""
        h.event(self._event({"type": "error",
                             "error": {"type": "overloaded_error", "message": "Overloaded"}}))
        h.end_stream()
        raise _Abort
