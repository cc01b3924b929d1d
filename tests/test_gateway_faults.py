"""The gateway's forwarding when a service behind it, the network or the client misbehaves.

A loopback `Upstream` stands in for the services (auth, chat and asset all point at it): it
records every request it gets and answers as the test says. Most tests call a gateway app
in this process; bodies and a client leaving midway are tested through gunicorn with a
gevent worker, as deployed.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import threading
import time

import pytest
import requests

from tests.conftest import make_app, problem_of
from tests.fakes.loopback import LoopbackHandler, LoopbackListener, LoopbackServer
from tests.test_e2e_gunicorn import NO_PROXY, ROOT, VENV_BIN, base_env, free_port, start_server

API = "/api/v0.2"
HTML = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"


# --------------------------------------------------------------------------- the service


class _UpstreamHandler(LoopbackHandler):
    def setup(self):
        super().setup()
        self.answered = 0  # requests this connection carried before the current one

    def _serve(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        record = {
            "method": self.command, "path": self.path, "body": body,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "port": self.client_address[1], "reused": self.answered > 0,
            "generation": self.fake.generation,
        }
        with self.fake._lock:
            self.fake.requests.append(record)
        self.answered += 1
        self.fake.answer(self, record)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def drop(self):
        """Close the connection without a word, as a service going down mid-request does."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def peer_closed(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        try:
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class Upstream(LoopbackServer):
    """A service behind the gateway. `answer(handler, record)` writes each response; a
    restart (`restart()`) serves the same port from a new listener, as a new process would."""

    handler = _UpstreamHandler

    def __init__(self):
        super().__init__()
        self.requests: list[dict] = []
        self.answer = reply()
        self.generation = 0
        self.port = 0
        self.stream_closed = threading.Event()

    def start(self):
        # LoopbackServer.start, on this fake's port once it has one.
        server = LoopbackListener(("127.0.0.1", self.port), self.handler)
        server.fake, server.stopping, server.open_sockets = self, threading.Event(), set()
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def restart(self):
        self.stop()
        self.generation += 1
        return self.start()


def reply(status=200, body=None, content_type="application/json", headers=()):
    """An answer: `body` None means a JSON echo of what the service received."""
    def answer(handler, record):
        data = body if body is not None else json.dumps({
            "generation": record["generation"], "method": record["method"], "path": record["path"],
        }).encode()
        handler.send_response(status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(data)
    return answer


def drop_on_a_reused_connection(handler, record):
    if record["reused"]:
        handler.drop()
    else:
        reply()(handler, record)


def hang(handler, record):
    handler.server.stopping.wait(30)
    handler.close_connection = True


def slow_events(handler, record, interval=0.1, count=300):
    """Server-sent events every `interval` s; notes when the gateway closes its connection."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    try:
        for number in range(count):
            if handler.peer_closed():
                break
            data = f"data: {number}\n\n".encode()
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if handler.server.stopping.wait(interval):
                return
        else:
            handler.wfile.write(b"0\r\n\r\n")
            return
    except OSError:
        pass
    handler.fake.stream_closed.set()
    handler.close_connection = True


@pytest.fixture
def upstream():
    with Upstream() as fake:
        yield fake


def gateway_for(url: str, tmp_path_factory, **settings):
    """A gateway alone, with every other service at `url`."""
    urls = {f"{name}_SERVICE_URL": url for name in ("AUTH", "CHAT", "ASSET")}
    database = f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'gaia.db'}"
    return make_app(database, tmp_path_factory, SERVICE_NAME="gateway", **urls, **settings).test_client()


@pytest.fixture
def gateway(upstream, tmp_path_factory):
    return gateway_for(upstream.url, tmp_path_factory)


# --------------------------------------------------------------------------- a service that restarts


def test_a_service_restarted_between_two_requests_answers_both(upstream, gateway):
    first = gateway.get(f"{API}/models")
    assert first.status_code == 200 and first.get_json()["generation"] == 0
    upstream.restart()  # the pooled connection to generation 0 is closed now
    second = gateway.post(f"{API}/chat", json={"message": "hi"})
    assert second.status_code == 200 and second.get_json()["generation"] == 1
    upstream.restart()
    third = gateway.get(f"{API}/models")
    assert third.status_code == 200 and third.get_json()["generation"] == 2
    # Each request reached the service once: nothing was sent twice.
    assert [(r["method"], r["generation"]) for r in upstream.requests] == [
        ("GET", 0), ("POST", 1), ("GET", 2)]


def test_a_connection_that_breaks_under_a_get_is_retried_once_on_a_new_one(upstream, gateway):
    upstream.answer = drop_on_a_reused_connection
    assert gateway.get(f"{API}/models").status_code == 200
    again = gateway.get(f"{API}/models?second=1")
    assert again.status_code == 200 and again.get_json()["path"] == f"{API}/models?second=1"
    tries = [r for r in upstream.requests if r["path"].endswith("second=1")]
    assert [r["reused"] for r in tries] == [True, False]
    assert tries[0]["port"] != tries[1]["port"]


def test_a_connection_that_breaks_under_a_post_is_not_retried(upstream, gateway):
    upstream.answer = drop_on_a_reused_connection
    assert gateway.get(f"{API}/models").status_code == 200
    response = gateway.post(f"{API}/chat", json={"message": "once"})
    body = problem_of(response, 502)
    assert "chat service" in body["detail"] and response.headers["Retry-After"] == "5"
    assert [r["method"] for r in upstream.requests] == ["GET", "POST"]


def test_a_get_is_retried_once_only(upstream, gateway):
    upstream.answer = lambda handler, record: handler.drop()
    problem_of(gateway.get(f"{API}/models"), 502)
    assert len(upstream.requests) == 2


# --------------------------------------------------------------------------- a service that hangs


def test_a_silent_service_is_a_504_after_the_read_timeout(upstream, tmp_path_factory):
    upstream.answer = hang
    gateway = gateway_for(upstream.url, tmp_path_factory, GATEWAY_READ_TIMEOUT="0.5")
    started = time.monotonic()
    body = problem_of(gateway.get(f"{API}/models"), 504)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 2.0, elapsed
    assert body["detail"] == "The chat service did not answer within 0.5 s."
    assert len(upstream.requests) == 1  # a read timeout is never retried
    openai = gateway.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert openai.status_code == 504 and openai.get_json()["error"]["type"] == "server_error"


def test_a_service_that_takes_no_connection_is_a_504_after_the_connect_timeout(tmp_path_factory):
    # A listener whose accept queue is full: the kernel drops further connection attempts.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.settimeout(0.2)
            try:
                filler.connect(listener.getsockname())
                fillers.append(filler)
            except OSError:
                filler.close()
                break
        else:
            pytest.skip("this kernel keeps accepting connections past the listen backlog")
        url = "http://127.0.0.1:%d" % listener.getsockname()[1]
        gateway = gateway_for(url, tmp_path_factory, GATEWAY_CONNECT_TIMEOUT="0.3")
        started = time.monotonic()
        body = problem_of(gateway.get(f"{API}/keys"), 504)
        assert time.monotonic() - started < 1.5
        assert body["detail"] == "The auth service did not accept a connection within 0.3 s."
    finally:
        for sock in fillers + [listener]:
            sock.close()


def headers_then(then):
    def answer(handler, record):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        then(handler, record)
    return answer


def test_an_answer_that_breaks_off_before_its_first_byte_is_a_502(upstream, gateway):
    upstream.answer = headers_then(lambda handler, record: handler.drop())
    response = gateway.get(f"{API}/conversations")
    assert problem_of(response, 502)["detail"] == "The chat service's answer broke off."
    assert response.headers["Retry-After"] == "5"


def test_an_answer_silent_after_its_headers_is_a_504(upstream, tmp_path_factory):
    upstream.answer = headers_then(hang)
    gateway = gateway_for(upstream.url, tmp_path_factory, GATEWAY_READ_TIMEOUT="0.3")
    body = problem_of(gateway.get(f"{API}/conversations"), 504)
    assert body["detail"] == "The chat service did not answer within 0.3 s."


def test_a_503_with_retry_after_is_relayed_at_once(upstream, gateway):
    problem = json.dumps({"type": "/problems/unavailable", "title": "Service Unavailable",
                          "status": 503, "detail": "busy"}).encode()
    upstream.answer = reply(503, problem, "application/problem+json", [("Retry-After", "7")])
    started = time.monotonic()
    response = gateway.get(f"{API}/jobs")
    assert time.monotonic() - started < 1.0  # urllib3 does not sleep and try again
    assert response.status_code == 503 and response.headers["Retry-After"] == "7"
    assert response.get_data() == problem and len(upstream.requests) == 1


# --------------------------------------------------------------------------- answers that are not Gaia's


@pytest.mark.parametrize(
    "status, body, content_type",
    [
        (502, HTML, "text/html"),
        (500, b"Internal Server Error", "text/plain; charset=utf-8"),
        (404, HTML, "text/html; charset=utf-8"),
        (503, b"", None),
    ],
)
def test_an_error_that_is_not_json_becomes_a_502_naming_the_service(
    upstream, gateway, status, body, content_type
):
    upstream.answer = reply(status, body, content_type)
    response = gateway.get(f"{API}/assets/abc")
    problem = problem_of(response, 502)
    assert problem["type"] == "/problems/upstream-bad-response"
    assert problem["detail"].startswith(f"The asset service failed: it answered {status} with ")
    assert (problem["service"], problem["upstream_status"]) == ("asset", status)
    assert b"<html" not in response.get_data() and b"Internal Server Error" not in response.get_data()
    assert response.headers.get("Retry-After") == ("5" if status in (502, 503) else None)

    openai = gateway.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert openai.status_code == 502 and openai.content_type == "application/json"
    error = openai.get_json()["error"]
    assert error["type"] == "server_error" and "chat service failed" in error["message"]


@pytest.mark.parametrize(
    "method, path, status, body, content_type",
    [
        ("GET", f"{API}/assets/a/file", 200, b"\x89PNG\r\n\x1a\n\x00\xff<html>not a page</html>",
         "image/png"),
        ("GET", f"{API}/jobs/j/events", 200, b"data: 1\n\ndata: [DONE]\n\n", "text/event-stream"),
        ("GET", f"{API}/users/u", 404, b'{"type":"/problems/not-found","status":404}',
         "application/problem+json"),
        ("POST", "/v1/chat/completions", 500, b'{"error":{"message":"boom","type":"server_error"}}',
         "application/json"),
        ("PATCH", f"{API}/personas/p", 422, b'{"errors":[]}',
         "application/vnd.gaia+json; charset=utf-8"),
    ],
)
def test_successes_of_any_type_and_json_errors_are_relayed_unchanged(
    upstream, gateway, method, path, status, body, content_type
):
    upstream.answer = reply(status, body, content_type, [("ETag", '"v1"')])
    response = gateway.open(path, method=method)
    assert (response.status_code, response.headers["Content-Type"], response.get_data()) == (
        status, content_type, body)
    assert response.headers["Content-Length"] == str(len(body)) and response.headers["ETag"] == '"v1"'
    assert upstream.requests[-1]["path"] == path and upstream.requests[-1]["method"] == method


def test_answers_without_a_body_stay_without_one(upstream, gateway):
    upstream.answer = reply(204, b"", None)
    empty = gateway.delete(f"{API}/keys/k")
    assert empty.status_code == 204 and "Content-Type" not in empty.headers
    upstream.answer = reply(304, b"", None, [("ETag", '"v1"')])
    unchanged = gateway.get(f"{API}/assets/x/file", headers={"If-None-Match": '"v1"'})
    assert unchanged.status_code == 304 and unchanged.headers["ETag"] == '"v1"'
    assert upstream.requests[-1]["headers"]["if-none-match"] == '"v1"'
    upstream.answer = reply(200, b"x" * 1234, "image/png")
    head = gateway.head(f"{API}/assets/x/file")
    assert head.status_code == 200 and head.headers["Content-Length"] == "1234"
    assert head.get_data() == b"" and upstream.requests[-1]["method"] == "HEAD"
    # Every one of them left the pool usable: the next request is answered as usual.
    upstream.answer = reply()
    assert gateway.get(f"{API}/models").get_json()["path"] == f"{API}/models"


# --------------------------------------------------------------------------- what goes through


def test_hop_by_hop_headers_stay_on_their_hop(upstream, gateway):
    upstream.answer = reply(200, b"{}", "application/json", [
        ("Connection", "X-Service-Hop"), ("X-Service-Hop", "1"), ("Keep-Alive", "timeout=5"),
        ("X-End-To-End", "yes"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ])
    response = gateway.get(f"{API}/models?q=a%26b&r=%20", headers={
        "Connection": "keep-alive, X-Client-Hop", "X-Client-Hop": "secret", "Keep-Alive": "300",
        "TE": "trailers", "Upgrade": "h2c", "Proxy-Authorization": "Basic eA==", "Expect": "",
        "Authorization": "Bearer token", "X-API-Key": "gaia_key",
        "X-Client-Trace": "t-1", "X-Forwarded-For": "203.0.113.9",
    })
    assert response.status_code == 200
    sent = upstream.requests[-1]
    for name in ("x-client-hop", "keep-alive", "te", "upgrade", "proxy-authorization", "expect",
                 "transfer-encoding"):
        assert name not in sent["headers"], name
    # The client's Connection header stays on its hop (HTTP/1.1 keeps the pool's alive anyway).
    assert sent["headers"].get("connection") in (None, "keep-alive")
    assert sent["headers"]["host"] == upstream.url.removeprefix("http://")
    for name, value in (("authorization", "Bearer token"), ("x-api-key", "gaia_key"),
                        ("x-client-trace", "t-1"),
                        ("x-forwarded-for", "203.0.113.9, 127.0.0.1"),
                        ("x-forwarded-host", "localhost")):
        assert sent["headers"][name] == value, name
    assert sent["path"] == f"{API}/models?q=a%26b&r=%20"
    assert "X-Service-Hop" not in response.headers and "Keep-Alive" not in response.headers
    assert response.headers["X-End-To-End"] == "yes"
    assert response.headers.getlist("Set-Cookie") == ["a=1", "b=2"]


def test_a_path_keeps_its_escaped_characters(upstream, gateway):
    gateway.get(f"{API}/personas/a%3Fb%23c%20d")
    assert upstream.requests[-1]["path"] == f"{API}/personas/a%3Fb%23c%20d"


# --------------------------------------------------------------------------- request bodies


def test_a_body_over_the_limit_is_413_without_calling_the_service(upstream, tmp_path_factory):
    gateway = gateway_for(upstream.url, tmp_path_factory, MAX_CONTENT_LENGTH="4096")
    problem_of(gateway.post(f"{API}/chat", data=b"x" * 4097, content_type="application/json"), 413)
    openai = gateway.post("/v1/chat/completions", data=b"x" * 4097, content_type="application/json")
    assert openai.status_code == 413 and "error" in openai.get_json()
    assert upstream.requests == []
    accepted = gateway.post(f"{API}/chat", data=b"y" * 4096, content_type="application/json")
    assert accepted.status_code == 200
    assert upstream.requests[-1]["body"] == b"y" * 4096


def test_a_chunked_body_the_server_does_not_end_is_411_not_dropped(upstream, gateway):
    import io

    response = gateway.post(f"{API}/chat", input_stream=io.BytesIO(b'{"message": "hi"}'),
                            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/json"})
    problem = problem_of(response, 411)
    assert "Content-Length" in problem["detail"] and upstream.requests == []


# --------------------------------------------------------------------------- through gunicorn


@pytest.fixture(scope="module")
def served_upstream():
    with Upstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def served_gateway(served_upstream, tmp_path_factory):
    """`gunicorn -c gunicorn.conf.py wsgi:app` (one gevent worker) as a gateway alone."""
    directory = tmp_path_factory.mktemp("served-gateway")
    instance = directory / "instance"
    instance.mkdir()
    urls = {f"{name}_SERVICE_URL": served_upstream.url for name in ("AUTH", "CHAT", "ASSET")}
    server = start_server(f"sqlite:///{directory / 'gaia.db'}", instance, directory, workers=1,
                          SERVICE_NAME="gateway", MAX_CONTENT_LENGTH="65536", **urls)
    yield server
    server.stop()


def post_chunked(url: str, pieces: list[bytes]) -> requests.Response:
    """requests sends a generator's pieces chunked, without Content-Length."""
    return requests.post(url, data=(piece for piece in pieces), proxies=NO_PROXY, timeout=20,
                         headers={"Content-Type": "application/json"})


def test_a_chunked_body_reaches_the_service_whole(served_upstream, served_gateway):
    served_upstream.answer = reply()
    pieces = [b'{"message": "', b"x" * 1000, "é ü".encode(), b"y" * 20_000, b'"}']
    response = post_chunked(served_gateway.url + f"{API}/chat", pieces)
    assert response.status_code == 200, response.text
    sent = served_upstream.requests[-1]
    assert sent["body"] == b"".join(pieces)
    assert sent["headers"]["content-length"] == str(len(sent["body"]))
    assert "transfer-encoding" not in sent["headers"]
    # Exactly MAX_CONTENT_LENGTH bytes are still accepted.
    at_limit = post_chunked(served_gateway.url + f"{API}/chat", [b"z" * 65_000, b"z" * 536])
    assert at_limit.status_code == 200 and len(served_upstream.requests[-1]["body"]) == 65_536


def test_a_chunked_body_over_the_limit_is_413_without_calling_the_service(
    served_upstream, served_gateway
):
    served_upstream.answer = reply()
    before = len(served_upstream.requests)
    for path, pieces in ((f"{API}/chat", [b"x" * 65_536, b"x"]),
                         ("/v1/chat/completions", [b"x" * 8192] * 25)):
        response = post_chunked(served_gateway.url + path, pieces)
        assert response.status_code == 413, (path, response.status_code, response.text[:300])
    assert response.json()["error"]["message"].startswith("The request body is larger than")
    assert len(served_upstream.requests) == before


def test_a_client_that_leaves_a_stream_closes_the_services_connection(
    served_upstream, served_gateway
):
    served_upstream.answer = slow_events
    served_upstream.stream_closed.clear()
    port = int(served_gateway.url.rsplit(":", 1)[1])
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        client.sendall(f"POST {API}/chat HTTP/1.1\r\nHost: gaia\r\nContent-Type: application/json\r\n"
                       "Content-Length: 2\r\n\r\n{}".encode())
        received = b""
        while received.count(b"data: ") < 2:
            piece = client.recv(4096)
            assert piece, received
            received += piece
    finally:
        client.close()
    left = time.monotonic()
    assert received.startswith(b"HTTP/1.1 200") and b"text/event-stream" in received
    assert served_upstream.stream_closed.wait(5), "the service's connection stayed open"
    assert time.monotonic() - left < 3.0


def events_then_gone(handler, record):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.write(b"d\r\ndata: first\n\n\r\n")
    handler.drop()  # no last chunk: the answer is cut off


def bytes_then_gone(handler, record):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b"x" * 1000)
    handler.drop()


@pytest.mark.parametrize("answer", [events_then_gone, bytes_then_gone])
def test_an_answer_cut_off_midway_does_not_reach_the_client_as_complete(
    served_upstream, served_gateway, answer
):
    served_upstream.answer = answer
    response = requests.get(served_gateway.url + f"{API}/jobs/j/events", stream=True,
                            proxies=NO_PROXY, timeout=10)
    assert response.status_code == 200
    received = b""
    with pytest.raises(requests.RequestException):
        for piece in response.iter_content(None):
            received += piece
    response.close()
    if answer is events_then_gone:  # what came before the break was passed on at once
        assert received == b"data: first\n\n"


def test_gunicorn_stops_on_a_malformed_service_url_with_one_line(tmp_path):
    env = base_env(f"sqlite:///{tmp_path / 'gaia.db'}", tmp_path / "instance", SERVICE_NAME="gateway",
                   AUTH_SERVICE_URL="http://127.0.0.1:9", ASSET_SERVICE_URL="http://127.0.0.1:9",
                   CHAT_SERVICE_URL="http://127.0.0.1:8002?x=1", PORT=str(free_port()), HOST="127.0.0.1")
    result = subprocess.run([str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=30,
                            start_new_session=True)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    lines = [line for line in output.splitlines() if "configuration error" in line]
    assert lines == [
        "gaia: configuration error: CHAT_SERVICE_URL='http://127.0.0.1:8002?x=1' must be the "
        "service's origin, without a path, query or fragment (such as "
        "http://gaia-chat.internal:8080): each request's own path and query are added to it"
    ]
    assert "Booting worker" not in output and "Traceback" not in output
