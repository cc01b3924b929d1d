"""A zero-delay OpenAI-compatible server on 127.0.0.1, for benchmarks (standard library only).

It answers as fast as it can, so that whatever sits in front of it (Gaia, the floor proxy)
is what a benchmark measures:

    GET  /v1/models             {"object": "list", "data": [gpt-4o-mini, gpt-4o, slow]}
    POST /v1/chat/completions   non-streamed: one fixed short reply with usage, in OpenAI's shape
                                "stream": true: chunked text/event-stream, as OpenAI sends it:
                                a role chunk, --chunks content chunks, a finish chunk, a usage
                                chunk when stream_options.include_usage, then `data: [DONE]`
                                with "tools": a call of one tool instead of text (see below)
    GET  /stats                 counters (JSON): connections accepted, requests, chat requests,
                                streams, slow requests waiting now / at most / started /
                                finished, client disconnects; `?reset=1` zeroes them after reading

The model "slow" (--slow-model) streams the same answer, but waits --first-token-delay seconds
after the headers and the role chunk before its first content chunk (non-streamed, it waits
before answering). It is for holding many streams open at once; /stats reports how many such
requests are waiting now and the most that waited at once.

A request that declares `tools` (function tools) is answered with one tool call, as OpenAI
answers one (unless `tool_choice` is "none"): the tool `tool_choice` names, else the first;
its arguments a JSON object with a value of the declared type for each required property
(an enum's first value). Non-streamed:
`message.tool_calls`, `content: null`, `finish_reason: "tool_calls"`. Streamed: the role chunk
carries the call's id, type and name with empty arguments, then the arguments come in
--chunks pieces (`delta.tool_calls[0].function.arguments`), then the finish chunk.

HTTP/1.1 with keep-alive; requests carry a Content-Length (chunked request bodies are refused
with 411). Any key is accepted. One asyncio event loop on raw protocols: run it as its own
process, so its CPU can be read apart from everything else.

    python bench/mock_llm.py --port 8099 [--first-token-delay 12] [--chunks 10]

It prints `mock-llm listening on http://127.0.0.1:PORT` once it accepts connections
(with --port 0, PORT is the one the system chose).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024
MODELS = ("gpt-4o-mini", "gpt-4o")
REPLY = "Hello! This is the benchmark mock. It answers at once, the same few words every time."
FINGERPRINT = "fp_bench0000"

_STATUS_TEXT = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                411: "Length Required", 413: "Payload Too Large"}


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


_SAMPLE = {"string": "Paris", "number": 1.5, "integer": 1, "boolean": True, "array": [], "object": {},
           "null": None}


def _sample(schema) -> object:
    """A value of the type a JSON Schema declares (an enum's first value)."""
    if not isinstance(schema, dict):
        return "x"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0] if kind else None
    if kind == "object":
        return _arguments(schema)
    return _SAMPLE.get(kind, "x")


def _arguments(schema) -> dict:
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else list(properties)
    return {name: _sample(properties.get(name)) for name in required if name in properties}


def tool_call_of(request: dict) -> tuple[str, str] | None:
    """(name, arguments as JSON text) of the call to answer with, or None without tools."""
    functions = [t.get("function") for t in request.get("tools") or ()
                 if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    functions = [f for f in functions if isinstance(f.get("name"), str)]
    if not functions:
        return None
    choice = request.get("tool_choice")
    if choice == "none":
        return None
    chosen = functions[0]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        chosen = next((f for f in functions if f["name"] == choice["function"].get("name")), chosen)
    return chosen["name"], _compact(_arguments(chosen.get("parameters")))


class Mock:
    def __init__(self, chunks: int, first_token_delay: float, slow_model: str) -> None:
        self.first_token_delay = first_token_delay
        self.slow_model = slow_model
        words = REPLY.split(" ")
        chunks = max(1, min(chunks, len(words)))
        # REPLY cut into `chunks` pieces whose concatenation is REPLY again.
        per = len(words) / chunks
        bounds = [round(i * per) for i in range(chunks + 1)]
        self.pieces = [" ".join(words[bounds[i]:bounds[i + 1]]) + (" " if i < chunks - 1 else "")
                       for i in range(chunks)]
        self.completion_tokens = len(words)
        self.counter = 0
        self.calls = 0
        self.stats = {"connections": 0, "requests": 0, "chat": 0, "streams": 0, "slow_waiting": 0,
                      "slow_waiting_max": 0, "slow_started": 0, "slow_finished": 0,
                      "disconnects": 0}
        models = list(MODELS) + [slow_model]
        self.models_body = _compact({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"} for m in models
        ]}).encode()

    def next_id(self) -> str:
        self.counter += 1
        return f"chatcmpl-bench{self.counter:012d}"

    @staticmethod
    def usage(prompt: int, completion: int) -> dict:
        return {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        }

    def prompt_tokens(self, request: dict) -> int:
        # Roughly 4 characters a token, plus a few per message, as a real count would go.
        total = 0
        for message in request.get("messages") or ():
            content = message.get("content") if isinstance(message, dict) else None
            total += 4 + (len(content) // 4 if isinstance(content, str) else 0)
        return max(total, 1)

    def call_id(self) -> str:
        self.calls += 1
        return f"call_bench{self.calls:014d}"

    def completion(self, model: str, prompt: int, call: tuple[str, str] | None = None) -> bytes:
        message = {"role": "assistant", "content": REPLY, "refusal": None, "annotations": []}
        completion_tokens = self.completion_tokens
        if call is not None:
            message["content"] = None
            message["tool_calls"] = [{"id": self.call_id(), "type": "function",
                                      "function": {"name": call[0], "arguments": call[1]}}]
            completion_tokens = 8 + len(call[1]) // 4
        return _compact({
            "id": self.next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if call is not None else "stop",
            }],
            "usage": self.usage(prompt, completion_tokens),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }).encode()

    def stream_events(self, model: str, prompt: int, include_usage: bool,
                      call: tuple[str, str] | None = None) -> tuple[bytes, bytes]:
        """(role chunk, everything after it) as HTTP chunks of one SSE event each."""
        head = (f'{{"id":"{self.next_id()}","object":"chat.completion.chunk","created":{int(time.time())},'
                f'"model":{_compact(model)},"service_tier":"default","system_fingerprint":"{FINGERPRINT}",'
                '"choices":[{"index":0,"delta":')
        tail = ',"logprobs":null,"finish_reason":null}]' + (',"usage":null' if include_usage else "") + "}"
        completion_tokens = self.completion_tokens
        if call is None:
            events = [head + '{"role":"assistant","content":"","refusal":null}' + tail]
            for piece in self.pieces:
                events.append(head + '{"content":' + _compact(piece) + "}" + tail)
        else:
            # OpenAI's order: id, type and name with empty arguments, then the arguments in pieces.
            name, arguments = call
            events = [head + '{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":'
                      + _compact(self.call_id()) + ',"type":"function","function":{"name":'
                      + _compact(name) + ',"arguments":""}}],"refusal":null}' + tail]
            per = max(1, -(-len(arguments) // len(self.pieces)))
            for start in range(0, len(arguments), per):
                events.append(head + '{"tool_calls":[{"index":0,"function":{"arguments":'
                              + _compact(arguments[start:start + per]) + "}}]}" + tail)
            completion_tokens = 8 + len(arguments) // 4
        finish = "stop" if call is None else "tool_calls"
        events.append(head + '{},"logprobs":null,"finish_reason":"' + finish + '"}]'
                      + (',"usage":null' if include_usage else "") + "}")
        if include_usage:
            events.append(head[: head.index('"choices":')] + '"choices":[],"usage":'
                          + _compact(self.usage(prompt, completion_tokens)) + "}")
        events.append("[DONE]")
        chunks = []
        for event in events:
            data = f"data: {event}\n\n".encode()
            chunks.append(b"%x\r\n%s\r\n" % (len(data), data))
        return chunks[0], b"".join(chunks[1:]) + b"0\r\n\r\n"


def _response(status: int, body: bytes, content_type: str = "application/json",
              close: bool = False) -> bytes:
    return (
        f"HTTP/1.1 {status} {_STATUS_TEXT.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode() + body


def _error(status: int, message: str, close: bool = False) -> bytes:
    body = _compact({"error": {"message": message, "type": "invalid_request_error",
                               "param": None, "code": None}}).encode()
    return _response(status, body, close=close)


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
               b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n")


class MockProtocol(asyncio.Protocol):
    def __init__(self, mock: Mock) -> None:
        self.mock = mock
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False  # a delayed answer is in progress: later requests wait their turn
        self.closed = False
        self.task: asyncio.Task | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.mock.stats["connections"] += 1

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            self.mock.stats["disconnects"] += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        buffer = self.buffer
        while not self.busy and not self.closed:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self.finish(_error(413, "request head too large", close=True), close=True)
                return
            lines = bytes(buffer[:end]).split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                self.finish(_error(400, "bad request line", close=True), close=True)
                return
            method, target, version = parts
            length = 0
            close = version == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip() or 0)
                elif name == b"connection":
                    value = value.strip().lower()
                    close = value == b"close" or (close and value != b"keep-alive")
                elif name == b"transfer-encoding":
                    self.finish(_error(411, "send a Content-Length", close=True), close=True)
                    return
            if length > MAX_BODY:
                self.finish(_error(413, "body too large", close=True), close=True)
                return
            if len(buffer) < end + 4 + length:
                return
            body = bytes(buffer[end + 4:end + 4 + length])
            del buffer[:end + 4 + length]
            self.handle(method, target, body, close)

    def finish(self, data: bytes, close: bool = False) -> None:
        if self.closed:
            return
        self.transport.write(data)
        if close:
            self.closed = True
            self.transport.close()

    def handle(self, method: bytes, target: bytes, body: bytes, close: bool) -> None:
        mock = self.mock
        mock.stats["requests"] += 1
        path, _, query = target.partition(b"?")
        if path == b"/v1/chat/completions":
            if method != b"POST":
                self.finish(_error(405, "use POST", close), close)
                return
            try:
                request = json.loads(body)
                if not isinstance(request, dict):
                    raise ValueError
            except ValueError:
                self.finish(_error(400, "We could not parse the JSON body of your request.", close), close)
                return
            mock.stats["chat"] += 1
            model = request.get("model")
            if not isinstance(model, str) or not model:
                self.finish(_error(400, "you must provide a model parameter", close), close)
                return
            prompt = mock.prompt_tokens(request)
            call = tool_call_of(request)
            slow = model == mock.slow_model
            if request.get("stream") is True:
                mock.stats["streams"] += 1
                options = request.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
                first, rest = mock.stream_events(model, prompt, include_usage, call)
                if slow:
                    self.finish(STREAM_HEAD + first)
                    self.later(rest, close)
                else:
                    self.finish(STREAM_HEAD + first + rest, close)
                return
            answer = _response(200, mock.completion(model, prompt, call), close=close)
            if slow:
                self.later(answer, close)
            else:
                self.finish(answer, close)
        elif path == b"/v1/models" and method == b"GET":
            self.finish(_response(200, mock.models_body, close=close), close)
        elif path == b"/stats" and method == b"GET":
            data = _compact(mock.stats).encode()
            if b"reset=1" in query:
                for key in mock.stats:
                    mock.stats[key] = 0
            self.finish(_response(200, data, close=close), close)
        else:
            self.finish(_error(404, f"no route {method.decode()} {path.decode('latin-1')}", close), close)

    def later(self, data: bytes, close: bool) -> None:
        """Send `data` after the first-token delay; this connection waits until then."""
        self.busy = True
        stats = self.mock.stats
        stats["slow_started"] += 1
        stats["slow_waiting"] += 1
        stats["slow_waiting_max"] = max(stats["slow_waiting_max"], stats["slow_waiting"])

        async def wait_then_send() -> None:
            try:
                await asyncio.sleep(self.mock.first_token_delay)
                self.finish(data, close)
                stats["slow_finished"] += 1
            finally:
                stats["slow_waiting"] -= 1
                self.busy = False
            if self.buffer and not self.closed:
                self.process()

        self.task = asyncio.get_running_loop().create_task(wait_then_send())


async def serve(host: str, port: int, mock: Mock) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: MockProtocol(mock), host, port, backlog=4096,
                                      reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"mock-llm listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Zero-delay OpenAI-compatible mock (loopback only).")
    parser.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "localhost"))
    parser.add_argument("--port", type=int, default=8099, help="0: any free port (printed)")
    parser.add_argument("--chunks", type=int, default=10, help="content chunks per streamed answer (10)")
    parser.add_argument("--first-token-delay", type=float, default=10.0,
                        help="seconds the slow model waits before its first content chunk (10)")
    parser.add_argument("--slow-model", default="slow", help="the model id that waits (slow)")
    args = parser.parse_args(argv)
    mock = Mock(args.chunks, args.first_token_delay, args.slow_model)
    try:
        asyncio.run(serve(args.host, args.port, mock))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
