"""`NatsPublisher` (`gaia_app.jobs.nats_events`) against the real NATS server on 127.0.0.1:4222.

Each test subscribes with a separate nats-py client to a subject prefix of its own, publishes
from synchronous code (threads, a forked child, a gevent-patched process), and checks what
arrived. Without a NATS server the tests are skipped, unless GAIA_TEST_REQUIRE_NATS=1 (CI),
where that is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gaia_app.jobs.events import STARTED, publisher_for
from gaia_app.jobs.nats_events import NatsPublisher
from gaia_app.state import gaia
from tests.conftest import make_app

NATS_URL = os.environ.get("GAIA_TEST_NATS_URL", "nats://127.0.0.1:4222")
REQUIRE_NATS = os.environ.get("GAIA_TEST_REQUIRE_NATS") == "1"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _nats_problem(url: str) -> str | None:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1) as connection:
            connection.settimeout(1)
            if not connection.recv(5).startswith(b"INFO"):
                return f"{url} answered, but not as a NATS server"
    except OSError as exc:
        return f"NATS not reachable at {url}: {exc}"
    return None


@pytest.fixture(scope="module")
def nats_url() -> str:
    problem = _nats_problem(NATS_URL)
    if problem:
        if REQUIRE_NATS:
            pytest.fail(problem)
        pytest.skip(problem)
    return NATS_URL


class Subscriber:
    """A nats-py client of its own (own thread and loop) that records what `prefix.>` gets."""

    def __init__(self, url: str, prefix: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._arrived = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._client = self._run(self._subscribe(url, prefix + ">"))

    def _run(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=5)

    async def _subscribe(self, url: str, subject: str):
        import nats

        client = await nats.connect(url)

        async def record(message) -> None:
            with self._arrived:
                self.messages.append((message.subject, message.data))
                self._arrived.notify_all()

        await client.subscribe(subject, cb=record)
        await client.flush()  # the server knows the subscription before anyone publishes
        return client

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.messages) >= count, timeout=timeout)
            return list(self.messages)

    def payloads(self) -> list[dict]:
        return [json.loads(data) for _, data in self.messages]

    def close(self) -> None:
        self._run(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        self._loop.close()


@pytest.fixture
def prefix() -> str:
    return f"gaiatest.{uuid.uuid4().hex}."


@pytest.fixture
def subscriber(nats_url, prefix) -> Iterator[Subscriber]:
    subscriber = Subscriber(nats_url, prefix)
    yield subscriber
    subscriber.close()


@pytest.fixture
def publishers() -> Iterator[list[NatsPublisher]]:
    """Publishers a test made; closed at its end whatever happened."""
    made: list[NatsPublisher] = []
    yield made
    for publisher in made:
        publisher.close()


def closed_port() -> socket.socket:
    """A bound, non-listening socket: connecting to its port is refused at once."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    return holder


# --------------------------------------------------------------------------- tests


def sender_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "gaia-nats-events")


def test_nothing_connects_until_the_first_publish(nats_url, publishers):
    before = sender_threads()
    publisher = publisher_for(nats_url)
    publishers.append(publisher)
    assert isinstance(publisher, NatsPublisher)
    assert publisher._sender is None and sender_threads() == before
    publisher.publish(STARTED, {"job_id": "j"})
    assert publisher._sender is not None and sender_threads() == before + 1


def test_events_arrive_as_compact_json_on_their_subject(nats_url, prefix, subscriber, publishers):
    publisher = NatsPublisher(nats_url, subject_prefix=prefix)
    publishers.append(publisher)
    job_id = uuid.uuid4()
    publisher.publish(STARTED, {"job_id": job_id, "asset_id": "a1", "user_id": None})
    publisher.publish("asset.generation.progress", {"job_id": str(job_id), "progress": 40})

    (first_subject, first), (second_subject, second) = subscriber.wait_for(2)
    assert first_subject == prefix + "asset.generation.started"
    assert first == json.dumps(
        {"job_id": str(job_id), "asset_id": "a1", "user_id": None}, separators=(",", ":")
    ).encode()
    assert b" " not in first
    assert second_subject == prefix + "asset.generation.progress"
    assert json.loads(second) == {"job_id": str(job_id), "progress": 40}


def test_events_from_many_threads_all_arrive_in_order_per_thread(
    nats_url, prefix, subscriber, publishers
):
    publisher = NatsPublisher(nats_url, subject_prefix=prefix)
    publishers.append(publisher)
    threads, per_thread = 8, 250
    start = threading.Barrier(threads)

    def publish_all(thread_number: int) -> None:
        start.wait()
        for sequence in range(per_thread):
            publisher.publish("asset.generation.progress", {"thread": thread_number, "seq": sequence})

    workers = [threading.Thread(target=publish_all, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert len(subscriber.wait_for(threads * per_thread)) == threads * per_thread
    by_thread: dict[int, list[int]] = {}
    for payload in subscriber.payloads():
        by_thread.setdefault(payload["thread"], []).append(payload["seq"])
    assert by_thread == {n: list(range(per_thread)) for n in range(threads)}
    assert publisher.dropped == 0


def test_close_sends_what_is_still_queued(nats_url, prefix, subscriber):
    publisher = NatsPublisher(nats_url, subject_prefix=prefix)
    count = 3000
    for sequence in range(count):
        publisher.publish("asset.generation.progress", {"seq": sequence, "pad": "x" * 200})
    started = time.monotonic()
    publisher.close()  # straight away: most are still in the queue or nats-py's buffer
    assert time.monotonic() - started < 3.0
    publisher.close()  # twice is fine

    subscriber.wait_for(count)
    assert [payload["seq"] for payload in subscriber.payloads()] == list(range(count))
    assert not publisher._sender.thread.is_alive()
    publisher.publish("asset.generation.progress", {"seq": "after close"})  # dropped, no error
    time.sleep(0.1)
    assert len(subscriber.messages) == count


def test_unreachable_server_neither_raises_nor_blocks():
    holder = closed_port()
    try:
        publisher = NatsPublisher(f"nats://127.0.0.1:{holder.getsockname()[1]}", max_queued=100)
        durations = []
        for sequence in range(1000):
            started = time.perf_counter()
            publisher.publish(STARTED, {"seq": sequence, "at": time.time()})
            durations.append(time.perf_counter() - started)
        publisher.publish(STARTED, {"unserialisable": float("nan"), "loop": object()})
        circular: dict = {}
        circular["self"] = circular
        publisher.publish(STARTED, circular)  # json refuses it: logged, not raised

        durations.sort()
        assert durations[-2] < 0.010, durations[-5:]  # the worst may carry the thread's start
        assert durations[-1] < 0.100
        assert publisher.dropped == 1001 - 100  # the queue keeps the newest 100

        started = time.monotonic()
        publisher.close()
        publisher.close()
        assert time.monotonic() - started < 1.0
        assert not publisher._sender.thread.is_alive()
    finally:
        holder.close()


def test_a_forked_child_publishes_with_a_connection_of_its_own(
    nats_url, prefix, subscriber, publishers
):
    publisher = NatsPublisher(nats_url, subject_prefix=prefix)
    publishers.append(publisher)
    publisher.publish(STARTED, {"from": "parent", "pid": os.getpid()})
    subscriber.wait_for(1)
    parent_sender = publisher._sender

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            publisher.publish(STARTED, {"from": "child", "pid": os.getpid()})
            own = publisher._sender is not parent_sender and publisher._sender.thread.is_alive()
            publisher.close()
            code = 0 if own else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    publisher.publish(STARTED, {"from": "parent", "pid": os.getpid()})  # its connection lives on
    subscriber.wait_for(3)
    senders = sorted((p["from"], p["pid"]) for p in subscriber.payloads())
    assert senders == sorted([("parent", os.getpid()), ("parent", os.getpid()), ("child", pid)])
    assert publisher._sender is parent_sender


class CuttableProxy:
    """A TCP proxy to NATS whose connections can be cut and whose door can be shut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = True
        self._connections: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()
        self._connections.clear()

    def close(self) -> None:
        self.cut()
        self._server.close()


def _wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_events_published_while_disconnected_arrive_after_the_reconnect(
    nats_url, prefix, subscriber, publishers
):
    host, port = nats_url.split("://", 1)[1].rsplit(":", 1)
    proxy = CuttableProxy((host, int(port)))
    try:
        publisher = NatsPublisher(f"nats://127.0.0.1:{proxy.port}", subject_prefix=prefix)
        publishers.append(publisher)
        publisher.publish(STARTED, {"seq": 0})
        assert len(subscriber.wait_for(1)) == 1

        proxy.cut()
        assert _wait_until(lambda: not publisher._sender._client.is_connected)
        for sequence in range(1, 51):
            publisher.publish(STARTED, {"seq": sequence})
        time.sleep(0.2)
        assert len(subscriber.messages) == 1

        proxy.open = True
        subscriber.wait_for(51)
        assert [p["seq"] for p in subscriber.payloads()] == list(range(51))
    finally:
        proxy.close()


GEVENT_PROBE = """
from gevent import monkey; monkey.patch_all()
import asyncio, json, sys, gevent
from gaia_app.jobs.nats_events import NatsPublisher

publisher = NatsPublisher(sys.argv[1], subject_prefix=sys.argv[2])

def publish_all(greenlet_number):
    for sequence in range(100):
        publisher.publish("asset.generation.progress", {"g": greenlet_number, "seq": sequence})
        gevent.sleep(0)

async def while_the_sender_runs():
    await asyncio.sleep(0.01)
    return "ok"

gevent.joinall([gevent.spawn(publish_all, n) for n in range(4)], raise_error=True)
# The sender's loop is not "the running loop" of the request's greenlet.
print(json.dumps({"asyncio_run": asyncio.run(while_the_sender_runs())}))
publisher.close()
"""


def test_gevent_greenlets_publish_and_keep_asyncio_usable(nats_url, prefix, subscriber):
    result = subprocess.run(
        [sys.executable, "-c", GEVENT_PROBE, nats_url, prefix],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"asyncio_run": "ok"}
    subscriber.wait_for(400)
    by_greenlet: dict[int, list[int]] = {}
    for payload in subscriber.payloads():
        by_greenlet.setdefault(payload["g"], []).append(payload["seq"])
    assert by_greenlet == {n: list(range(100)) for n in range(4)}


def test_close_straight_after_the_first_publish_waits_for_the_connection(nats_url, prefix, subscriber):
    publisher = NatsPublisher(nats_url, subject_prefix=prefix)
    publisher.publish(STARTED, {"seq": 0})
    publisher.close()  # the connection is still being made: close waits for it, then sends
    subscriber.wait_for(1)
    assert subscriber.payloads() == [{"seq": 0}]


def test_an_app_with_nats_url_connects_on_its_first_event(nats_url, prefix, subscriber, tmp_path_factory):
    before = sender_threads()
    database = tmp_path_factory.mktemp("nats-app") / "gaia.db"
    runtime = gaia(make_app(f"sqlite:///{database}", tmp_path_factory, NATS_URL=nats_url)).assets
    publisher = runtime.events
    assert isinstance(publisher, NatsPublisher) and sender_threads() == before
    publisher.subject_prefix = prefix  # this test's subjects only
    publisher.publish(STARTED, {"job_id": "j1"})
    runtime.close()
    subscriber.wait_for(1)
    assert subscriber.messages[0][0] == prefix + STARTED and subscriber.payloads() == [{"job_id": "j1"}]


def test_a_process_that_exits_without_close_still_sends_its_last_events(nats_url, prefix, subscriber):
    script = ("import sys\nfrom gaia_app.jobs.nats_events import NatsPublisher\n"
              "publisher = NatsPublisher(sys.argv[1], subject_prefix=sys.argv[2])\n"
              "for sequence in range(100):\n"
              "    publisher.publish('asset.generation.completed', {'seq': sequence})\n")
    result = subprocess.run([sys.executable, "-c", script, nats_url, prefix], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    subscriber.wait_for(100)
    assert [payload["seq"] for payload in subscriber.payloads()] == list(range(100))
