"""Streamed answers: a provider's chunks relayed to the client as server-sent events.

The provider is read in a helper thread (a greenlet under gevent) that hands chunks over a
queue, so the thread serving the client can send an SSE comment while the first token is
late, and can abort the provider connection when the client goes away. Falling back to
another provider happens in the helper, and only before the first chunk of an answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

from flask import Flask, current_app

from blueprints.chat.routing import Target, note_failure, pause_of
from gaia_app.providers.base import ChatRequest, ProviderError, StreamChunk, ToolCall, Usage
from gaia_app.providers.pools import StreamScope

log = logging.getLogger(__name__)

KEEPALIVE = b": keepalive\n\n"
# Sent when the provider accepted the request: the client gets the response head at once,
# while nothing of an answer has gone out yet (a fallback may still follow).
OPENED = b": connected\n\n"
DONE = b"data: [DONE]\n\n"


class StreamRelay:
    """Runs `targets` in turn in a helper thread until one streams; `next()` reads its events.

    Events: ("opened", None) when a provider accepted the request, ("start", Target) before
    the first chunk, ("chunk", StreamChunk), then ("end", None) or ("error", ProviderError,
    started: bool).
    """

    def __init__(self, targets: list[Target], make_request: Callable[[Target], ChatRequest]) -> None:
        self._targets = targets
        self._make_request = make_request
        self._events: queue.Queue = queue.Queue()
        self._scope = StreamScope()
        self._scope.on_open = lambda: self._events.put(("opened", None))
        self._cancelled = threading.Event()
        self._app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        threading.Thread(target=self._run, name="gaia-stream", daemon=True).start()

    def next(self, timeout: float):
        """The next event, or None when nothing came within `timeout` seconds."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def next_nowait(self):
        """An event already waiting, or None."""
        try:
            return self._events.get_nowait()
        except queue.Empty:
            return None

    def cancel(self) -> None:
        """The client went away: stop reading, and close the provider connection."""
        self._cancelled.set()
        self._scope.abort()

    def _run(self) -> None:
        with self._app.app_context(), self._scope:
            try:
                self._produce()
            except Exception:
                log.exception("a provider stream failed unexpectedly")
                self._events.put(("error", ProviderError("gaia", "bad_response", "The answer could not be relayed."), True))

    def _produce(self) -> None:
        last: ProviderError | None = None
        started = False
        for target in self._targets:
            if self._cancelled.is_set():
                return
            pause = pause_of(target)
            if pause is not None:
                last = pause
                continue
            try:
                with contextlib.closing(target.provider.stream(self._make_request(target))) as chunks:
                    for chunk in chunks:
                        if self._cancelled.is_set():
                            return
                        if not started:
                            started = True
                            self._events.put(("start", target))
                        self._events.put(("chunk", chunk))
                self._events.put(("end", None))
                return
            except ProviderError as error:
                if self._cancelled.is_set():
                    return
                note_failure(target, error)
                last = error
                if started or not error.retryable:
                    break
        assert last is not None
        self._events.put(("error", last, started))


class ChunkWriter:
    """OpenAI `chat.completion.chunk` events, formatted with little work per token."""

    def __init__(self, completion_id: str, model: str, created: int | None = None) -> None:
        created = int(time.time()) if created is None else created
        self._head = (
            f'data: {{"id":"{completion_id}","object":"chat.completion.chunk","created":{created},'
            f'"model":{json.dumps(model)},"choices":[{{"index":0,"delta":'
        )

    def role(self) -> bytes:
        return (self._head + '{"role":"assistant","content":""},"finish_reason":null}]}\n\n').encode()

    def content(self, text: str) -> bytes:
        return (self._head + '{"content":' + json.dumps(text) + '},"finish_reason":null}]}\n\n').encode()

    def tool_calls(self, calls: tuple[ToolCall, ...]) -> bytes:
        """Whole tool calls in one delta, in OpenAI's shape (each with its index)."""
        delta = {"tool_calls": [
            {"index": index, "id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for index, call in enumerate(calls)
        ]}
        return (self._head + json.dumps(delta, separators=(",", ":")) + ',"finish_reason":null}]}\n\n').encode()

    def finish(self, reason: str, extra: dict | None = None) -> bytes:
        tail = "" if not extra else "," + json.dumps(extra, separators=(",", ":"))[1:-1]
        return (self._head + '{},"finish_reason":' + json.dumps(reason) + "}]" + tail + "}\n\n").encode()

    def usage_only(self, usage: dict) -> bytes:
        head = self._head[: self._head.index('"choices":')]
        return (head + '"choices":[],"usage":' + json.dumps(usage, separators=(",", ":")) + "}\n\n").encode()


def error_event(error: ProviderError) -> bytes:
    """The one documented error event: `event: error` with an OpenAI-shaped error object."""
    body = {"error": {"message": error.message, "type": error.kind, "code": "provider_" + error.kind, "provider": error.provider}}
    return b"event: error\ndata: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class StreamOutcome:
    """What became of a stream, for storing and usage: filled in as the stream runs."""

    def __init__(self) -> None:
        self.target: Target | None = None
        # The provider's own events went out as they came (`StreamChunk.raw`): they carried
        # its last chunk and usage, so nothing is added after them.
        self.relayed = False
        self.text_parts: list[str] = []
        self.chunk: StreamChunk | None = None  # the last one: usage and finish reason
        self.first_token_at: float | None = None
        self.error: ProviderError | None = None
        self.cancelled = False

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def finish_reason(self) -> str:
        return self.chunk.finish_reason if self.chunk and self.chunk.finish_reason else "stop"

    @property
    def reported_usage(self) -> Usage | None:
        """The usage the provider reported at the end, if it did."""
        return self.chunk.usage if self.chunk else None


class _Translator:
    """Turns relay events into SSE bytes, filling in the stream's outcome as it goes."""

    def __init__(self, writer_for: Callable[[Target], ChunkWriter]) -> None:
        self.outcome = StreamOutcome()
        self.writer: ChunkWriter | None = None
        self._writer_for = writer_for
        # Gaia's role chunk waits for the first chunk: a relayed stream has the provider's own.
        self._role_pending = False

    def _role(self, parts: list[bytes]) -> None:
        if self._role_pending:
            self._role_pending = False
            parts.append(self.writer.role())

    def _chunk(self, chunk: StreamChunk, parts: list[bytes]) -> None:
        outcome = self.outcome
        if chunk.raw is not None:
            self._role_pending = False
            outcome.relayed = True
            parts.append(chunk.raw)
        if chunk.text or chunk.raw is not None:
            if outcome.first_token_at is None:
                outcome.first_token_at = time.monotonic()
        if chunk.text:
            outcome.text_parts.append(chunk.text)
            if chunk.raw is None:
                self._role(parts)
                parts.append(self.writer.content(chunk.text))
        if chunk.usage is not None or chunk.finish_reason is not None:
            outcome.chunk = chunk

    def take(self, event, parts: list[bytes]) -> bool:
        """Add what `event` sends to `parts`; True when the stream is over."""
        outcome = self.outcome
        if event is None:
            parts.append(KEEPALIVE)
        elif event[0] == "chunk":
            self._chunk(event[1], parts)
        elif event[0] == "opened":
            parts.append(OPENED)
        elif event[0] == "start":
            outcome.target = event[1]
            self.writer = self._writer_for(event[1])
            self._role_pending = True
        else:  # error
            outcome.error = event[1]
            parts.extend((error_event(event[1]), DONE))
            return True
        return False

    def batch(self, relay: StreamRelay, event) -> tuple[list[bytes], bool, bool]:
        """`event` and every event already waiting after it, as one write.

        Returns (parts, over: an error ended the stream, ended: the answer is complete)."""
        parts: list[bytes] = []
        while True:
            if event is not None and event[0] == "end":
                if not self.outcome.relayed:
                    self._role(parts)  # an answer without text still names its role
                return parts, False, True
            if self.take(event, parts):
                return parts, True, False
            event = relay.next_nowait()
            if event is None:
                return parts, False, False


def relay_events(
    relay: StreamRelay,
    first,
    keepalive: float,
    writer_for: Callable[[Target], ChunkWriter],
    closing: Callable[[StreamOutcome, ChunkWriter | None], list[bytes]],
    settle: Callable[[StreamOutcome], None],
) -> Iterator[bytes]:
    """The SSE body. `first` is the event already taken from the relay (or None: keepalive).

    Events that are already waiting go out in one write: a provider that sends a burst costs
    one send, and one that trickles gets each piece at once. `settle(outcome)` runs exactly
    once: for a complete answer before its last events go out (so the conversation the last
    chunk names already holds it), otherwise when the stream ends by an error or because the
    client went away. `closing(outcome, writer)` gives the events sent after the last chunk,
    before `data: [DONE]`.
    """
    translator = _Translator(writer_for)
    outcome = translator.outcome
    settled = False
    event = first
    try:
        while True:
            parts, over, ended = translator.batch(relay, event)
            if parts:
                yield b"".join(parts)
            if ended:
                # The answer is out; it is stored before the last chunk names its conversation.
                settled = True
                _settle(settle, outcome)
                yield b"".join(closing(outcome, translator.writer)) + DONE
                return
            if over:
                return
            event = relay.next(keepalive)
    except GeneratorExit:
        outcome.cancelled = True
        relay.cancel()
        raise
    finally:
        if not settled:
            if outcome.error is None and not outcome.cancelled:
                # Ended some other way (a write failed): the client is gone.
                outcome.cancelled = True
                relay.cancel()
            _settle(settle, outcome)


def _settle(settle: Callable[[StreamOutcome], None], outcome: StreamOutcome) -> None:
    try:
        settle(outcome)
    except Exception:
        log.exception("could not finish a streamed chat")
