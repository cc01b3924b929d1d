"""`asset.generation.*` events to NATS: the `EventPublisher` of deployments with NATS_URL.

nats-py speaks asyncio, and the code that publishes is synchronous (web workers, gevent
greenlets, Celery prefork children, the runner's threads). So each process has one sender: a
background thread that owns an asyncio event loop and one NATS connection, made on the first
`publish` (importing this module or building the app connects nothing).

`publish` only serialises the payload and appends it to a bounded queue: it never raises and
never waits on the network. When the queue is full the oldest event goes (events inform, they
never decide a job's fate) and a warning counts what was dropped. nats-py reconnects on its
own for as long as the process lives, and buffers publishes while it is disconnected.

Events reach the loop in batches: the queue is a deque under a lock, and the first event of a
batch wakes the loop with `call_soon_threadsafe` (one wake-up per batch rather than one
`run_coroutine_threadsafe` future per event); `close` hands its shutdown over the same way.

After a fork the child has no sender thread, only a copy of the parent's objects: the pid is
checked on every publish, and a child starts its own thread, loop and connection.

Under gevent (threading patched, as in gunicorn's gevent workers) the sender "thread" is a
greenlet and the loop waits through gevent's selector, so it shares the worker's hub like
any other greenlet; a real OS thread there would run gevent sockets outside their hub.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import os
import selectors
import sys
import threading
import time
import weakref
from typing import Any

log = logging.getLogger("gaia.events")

MAX_QUEUED_EVENTS = 10_000
CLOSE_FLUSH_SECONDS = 2.0
RECONNECT_WAIT_SECONDS = 0.5
CONNECT_TIMEOUT_SECONDS = 2
# What nats-py keeps in memory while it reconnects; publishes beyond it are dropped (counted).
PENDING_BYTES_WHILE_DISCONNECTED = 4 * 1024 * 1024
# At most one "events dropped" or "NATS unreachable" warning per this many seconds.
WARNING_INTERVAL_SECONDS = 10.0

# Senders left behind by a fork: the child keeps them referenced so that garbage collection
# never runs their transports' clean-up on descriptors the parent is still using.
_inherited_senders: list[_Sender] = []
_publishers: weakref.WeakSet[NatsPublisher] = weakref.WeakSet()


def _under_gevent() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


class _GreenletSelector:
    """The loop's selector under gevent, where the sender "thread" is a greenlet.

    asyncio keeps the running loop per OS thread, and every greenlet of a gevent worker
    shares one: while the sender's loop is parked in `select` (and other greenlets run), the
    slot holds what the greenlet it interrupted had, so their `asyncio.run` still works; while
    the loop runs its callbacks (which never switch greenlets) the slot is the loop's.
    """

    def __init__(self, inner: selectors.BaseSelector) -> None:
        self._inner = inner
        self.loop: asyncio.AbstractEventLoop | None = None
        self.interrupted: asyncio.AbstractEventLoop | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def select(self, timeout: float | None = None) -> list:
        asyncio.events._set_running_loop(self.interrupted)
        try:
            return self._inner.select(timeout)
        finally:
            self.interrupted = asyncio.events._get_running_loop()
            asyncio.events._set_running_loop(self.loop)


class _Sender:
    """One process's thread, event loop and NATS connection, and the queue that feeds them."""

    def __init__(self, nats_url: str, *, max_queued: int, connection_name: str) -> None:
        self.nats_url = nats_url
        self.connection_name = connection_name
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._max_queued = max_queued
        self._lock = threading.Lock()
        self._wake_pending = False
        self._stopping = False
        self.dropped = 0
        self._last_drop_warning = 0.0
        self._last_error_warning = 0.0
        self._greenlet_selector: _GreenletSelector | None = None
        if _under_gevent():
            self._greenlet_selector = _GreenletSelector(selectors.DefaultSelector())
            self.loop = asyncio.SelectorEventLoop(self._greenlet_selector)  # type: ignore[arg-type]
            self._greenlet_selector.loop = self.loop
        else:
            self.loop = asyncio.new_event_loop()
        # Bound to the sender's loop on first use (asyncio primitives no longer take a loop).
        self._has_work = asyncio.Event()
        self._pump_task: asyncio.Task | None = None
        self._client: Any = None
        self._connected_once = False
        self._connect_refused = asyncio.Event()
        self._stopped = threading.Event()
        self.thread = threading.Thread(target=self._run_loop, name="gaia-nats-events", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ caller's side

    def enqueue(self, subject: str, data: bytes) -> None:
        with self._lock:
            full = len(self._queue) >= self._max_queued
            if full:
                self._queue.popleft()
            self._queue.append((subject, data))
            wake = not self._wake_pending
            self._wake_pending = True
        if full:
            self._count_drop()
        if wake:
            # One wake-up per batch, not per event: a burst costs the loop one callback.
            try:
                self.loop.call_soon_threadsafe(self._wake)
            except RuntimeError:  # the loop closed under a publish that raced `close`
                self._count_drop()

    @property
    def running(self) -> bool:
        return not self._stopped.is_set()

    def close(self, timeout: float) -> None:
        """Send what is queued, flush (at most `timeout`), drain, and stop the thread."""
        if not self.running:
            return
        try:
            self.loop.call_soon_threadsafe(self._start_shutdown, timeout)
        except RuntimeError:  # the loop is already closed
            return
        # Pump, flush and drain each have `timeout`; closing must never hang the process.
        if not self._stopped.wait(timeout * 3 + 1.0):
            log.warning("NATS events: closing did not finish within %.1f s", timeout * 3 + 1.0)
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:  # it closed just now after all
                pass

    def _count_drop(self) -> None:
        # Logged outside the queue's lock: a handler may block (or, under gevent, switch).
        with self._lock:
            self.dropped += 1
            dropped = self.dropped
            now = time.monotonic()
            warn = now - self._last_drop_warning >= WARNING_INTERVAL_SECONDS
            if warn:
                self._last_drop_warning = now
        if warn:
            log.warning("NATS events: %d dropped so far (queue full or NATS unreachable)", dropped)

    # ------------------------------------------------------------------ the loop's side

    def _run_loop(self) -> None:
        outside = self._greenlet_selector
        if outside is not None:
            # Another greenlet's loop may be parked right now: its slot is kept, not refused.
            outside.interrupted = asyncio.events._get_running_loop()
            asyncio.events._set_running_loop(None)
        try:
            self._pump_task = self.loop.create_task(self._pump())
            self.loop.run_forever()
            leftovers = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
            for task in leftovers:
                task.cancel()
            if leftovers:
                self.loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        except Exception:
            log.exception("NATS events: the sender thread failed")
        finally:
            self.loop.close()
            if outside is not None:
                asyncio.events._set_running_loop(outside.interrupted)
            self._stopped.set()

    def _start_shutdown(self, timeout: float) -> None:
        self.loop.create_task(self._shutdown(timeout))

    def _wake(self) -> None:
        self._has_work.set()

    async def _pump(self) -> None:
        try:
            await self._connect_and_send()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Queued events stay bounded (the oldest go); the process itself carries on.
            log.exception("NATS events: the sender stopped; events from now on are dropped")

    async def _connect_and_send(self) -> None:
        from nats.aio.client import Client

        self._client = Client()
        # With max_reconnect_attempts=-1 this returns only once a server answered.
        await self._client.connect(
            servers=[self.nats_url],
            name=self.connection_name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_SECONDS,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            pending_size=PENDING_BYTES_WHILE_DISCONNECTED,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        self._connected_once = True
        log.info("NATS events: connected to %s", self._client.connected_url.netloc)
        while True:
            await self._has_work.wait()
            self._has_work.clear()
            await self._send_queued()
            if self._stopping:
                return

    def _take_queued(self) -> list[tuple[str, bytes]]:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._wake_pending = False
        return batch

    async def _send_queued(self) -> None:
        for subject, data in self._take_queued():
            try:
                await self._client.publish(subject, data)
            except Exception as exc:  # buffer full while reconnecting, closed, bad subject
                self._count_drop()
                log.debug("NATS events: could not publish on %s: %r", subject, exc)

    async def _shutdown(self, timeout: float) -> None:
        self._stopping = True
        client, pump = self._client, self._pump_task
        if pump is not None and not pump.done():
            # Connected (or reconnecting: nats-py buffers), or the first attempt is still under
            # way: the pump sends what is queued and returns (cancelling it could cut a batch
            # short). A server that refused us already is not waited for.
            self._wake()
            refused = asyncio.ensure_future(self._connect_refused.wait())
            await asyncio.wait({pump, refused}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            refused.cancel()
            if not pump.done():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
        unsent = len(self._take_queued())
        if unsent:
            log.warning("NATS events: %d not sent at close (NATS unreachable)", unsent)
        if self._connected_once:
            await self._flush_and_drain(client, timeout)
        elif client is not None:
            await asyncio.gather(client.close(), return_exceptions=True)
        self.loop.call_soon(self.loop.stop)

    async def _flush_and_drain(self, client: Any, timeout: float) -> None:
        try:
            await client.flush(timeout=timeout)
        except Exception as exc:
            log.warning("NATS events: flush at close failed: %r", exc)
        try:
            await asyncio.wait_for(client.drain(), timeout=timeout)
        except Exception as exc:
            log.warning("NATS events: drain at close failed: %r", exc)
            await asyncio.gather(client.close(), return_exceptions=True)

    # ------------------------------------------------------------------ nats-py's callbacks

    async def _on_error(self, exc: Exception) -> None:
        if not self._connected_once:
            self._connect_refused.set()
        # nats-py reports every failed attempt (twice a second while NATS is down): warn rarely.
        now = time.monotonic()
        if not self._stopping and now - self._last_error_warning >= WARNING_INTERVAL_SECONDS:
            self._last_error_warning = now
            log.warning("NATS events: %s: %r (retrying)", self.nats_url, exc)

    async def _on_disconnected(self) -> None:
        if not self._stopping:
            log.warning("NATS events: disconnected; buffering while reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("NATS events: reconnected")


class NatsPublisher:
    """`EventPublisher` to core NATS: subject `subject_prefix + event name`, JSON payload."""

    def __init__(
        self,
        nats_url: str,
        *,
        subject_prefix: str = "",
        max_queued: int = MAX_QUEUED_EVENTS,
        close_timeout: float = CLOSE_FLUSH_SECONDS,
        connection_name: str = "gaia",
    ) -> None:
        self.nats_url = nats_url
        self.subject_prefix = subject_prefix
        self.max_queued = max_queued
        self.close_timeout = close_timeout
        self.connection_name = connection_name
        self._start_lock = threading.Lock()
        self._sender: _Sender | None = None
        self._sender_pid: int | None = None
        self._closed = False
        self._closes_at_exit = False
        _publishers.add(self)

    @property
    def dropped(self) -> int:
        """Events this process's sender dropped (queue full, or refused by nats-py)."""
        sender = self._sender
        return sender.dropped if sender is not None and self._sender_pid == os.getpid() else 0

    def publish(self, subject: str, payload: dict[str, Any]) -> None:
        try:
            data = json.dumps(payload, separators=(",", ":"), default=str).encode()
            sender = self._current_sender()
            if sender is not None:
                sender.enqueue(self.subject_prefix + subject, data)
        except Exception:
            log.warning("NATS events: %s not published", subject, exc_info=True)

    def close(self) -> None:
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            sender = self._sender if self._sender_pid == os.getpid() else None
        if sender is not None:
            sender.close(self.close_timeout)

    def _current_sender(self) -> _Sender | None:
        """This process's sender, started on first use (and anew in a forked child)."""
        pid = os.getpid()
        sender = self._sender
        if sender is not None and self._sender_pid == pid:
            return sender
        with self._start_lock:
            if self._closed:
                return None
            if self._sender is None or self._sender_pid != pid:
                if self._sender is not None:
                    _inherited_senders.append(self._sender)
                self._sender = _Sender(
                    self.nats_url, max_queued=self.max_queued, connection_name=self.connection_name
                )
                self._sender_pid = pid
            if not self._closes_at_exit:
                # What a short-lived process (a CLI command, a worker told to stop) published
                # last still goes out; the sender thread is a daemon and would just vanish.
                atexit.register(self.close)
                self._closes_at_exit = True
            return self._sender

    def _forget_parent(self) -> None:
        """In a forked child: the parent's lock may have been held at the fork, and its thread
        does not exist here. Nothing of the parent's sender is reused (nor closed)."""
        self._start_lock = threading.Lock()
        if self._sender is not None:
            _inherited_senders.append(self._sender)
        self._sender = None
        self._sender_pid = None


def _after_fork_in_child() -> None:
    for publisher in list(_publishers):
        publisher._forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
