"""What every loopback fake server shares: a threaded HTTP/1.1 listener on 127.0.0.1, a
handler that keeps track of its open connections, and a start/stop lifecycle that ends idle
keep-alive connections at once (so a stopped fake never leaves a thread in `readline`)."""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackListener(ThreadingHTTPServer):
    daemon_threads = True
    # Tests open dozens of streams at once; socketserver's default backlog of 5 would drop
    # connection attempts, which the client only retries a second or more later.
    request_queue_size = 512

    def handle_error(self, request, client_address):
        """A client that drops a kept-alive connection (as one refusing an oversized body
        does) is normal here; anything else is still printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackHandler(BaseHTTPRequestHandler):
    """Transport only; the fake (`self.fake`) decides what to answer."""

    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like the real APIs

    def setup(self):
        super().setup()
        self.fake = self.server.fake
        with self.fake._lock:
            self.server.open_sockets.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.fake._lock:
                self.server.open_sockets.discard(self.connection)

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass


class LoopbackServer:
    """A fake's lifecycle: `start()` (or `with fake:`), `url`, `stop()`."""

    handler: type[LoopbackHandler] = LoopbackHandler

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: LoopbackListener | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self):
        server = LoopbackListener(("127.0.0.1", 0), self.handler)
        server.fake, server.stopping, server.open_sockets = self, threading.Event(), set()
        self._server = server
        # serve_forever notices shutdown() only between polls: a short interval keeps stop() fast.
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True,
                                        name=f"{type(self).__name__}-server")
        self._thread.start()
        return self

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()  # releases hangs and delays
        server.shutdown()
        with self._lock:
            sockets = list(server.open_sockets)
        for sock in sockets:  # idle keep-alive threads sit in readline() until this
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        self._thread.join(timeout=1)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


def served(fake: type, **settings):
    """A module-scoped pytest fixture that runs `fake(**settings)` for the module's tests:
    `oai = served(FakeOpenAI, models=("gpt-4o-mini",), api_key=KEY)` (the fixture takes the
    name it is given)."""
    import pytest

    @pytest.fixture(scope="module")
    def fixture():
        with fake(**settings) as server:
            yield server

    return fixture
