"""The provider transport (`gaia_app.providers.http.ProviderHTTP`) on its own, against
loopback servers: proxies from the environment, redirects, compressed and oversized answers,
errors, and connections kept for the next call."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import threading
from urllib.parse import urlsplit

import pytest

from gaia_app.providers import http as provider_http
from gaia_app.providers.base import ProviderError
from gaia_app.providers.http import ProviderHTTP
from tests.fakes.llm_servers import Behaviour, FakeOpenAI
from tests.fakes.loopback import LoopbackHandler, LoopbackServer, served

KEY = "sk-transport-test"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                   "NO_PROXY", "no_proxy")

fake = served(FakeOpenAI, models=("gpt-4o-mini",), api_key=KEY)


class _ScriptedHandler(LoopbackHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        self.fake.seen.append((self.command, self.path, self.client_address[1]))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, body = self.fake.answer
        self.send_response(status)
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST


class Scripted(LoopbackServer):
    """Answers every request with `answer` (status, headers, body) and notes what came."""

    handler = _ScriptedHandler

    def __init__(self, answer=(200, [("Content-Type", "application/json")], b"{}")):
        super().__init__()
        self.answer = answer
        self.seen: list[tuple[str, str, int]] = []


class _ProxyHandler(LoopbackHandler):
    """A forward proxy for plain HTTP: takes absolute-form requests and relays them."""

    def do_POST(self):  # noqa: N802
        target = urlsplit(self.path)
        self.fake.seen.append((self.command, self.path))
        self.fake.credentials.append(self.headers.get("Proxy-Authorization"))
        if self.fake.required and self.headers.get("Proxy-Authorization") != self.fake.required:
            self.send_response(407)
            self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=5)
        upstream.request(self.command, target.path + (f"?{target.query}" if target.query else ""), body, headers)
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    do_GET = do_POST


class Proxy(LoopbackServer):
    handler = _ProxyHandler

    def __init__(self, required: str | None = None):
        super().__init__()
        self.required = required  # a Proxy-Authorization value to insist on
        self.seen: list[tuple[str, str]] = []
        self.credentials: list[str | None] = []


@pytest.fixture
def clean_proxy_env(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def transport(base_url: str, read_timeout: float = 5.0) -> ProviderHTTP:
    return ProviderHTTP("openai", base_url, {"Authorization": f"Bearer {KEY}"}, 2.0, read_timeout)


def test_a_call_goes_direct_and_keeps_its_connection_for_the_next(clean_proxy_env):
    with Scripted() as server:
        http = transport(server.url + "/v1")
        assert http.post_json("/chat/completions", BODY) == {}
        assert http.post_json("/chat/completions", BODY) == {}
        [(_, first_path, first_port), (_, _, second_port)] = server.seen
        assert first_path == "/v1/chat/completions"
        assert first_port == second_port  # one connection, reused


def test_the_proxy_the_environment_names_is_used(clean_proxy_env, fake):
    with Proxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        data = transport(fake.url + "/v1").post_json("/chat/completions", BODY)
        assert data["choices"][0]["message"]["content"].startswith("Hello from")
        assert proxy.seen == [("POST", fake.url + "/v1/chat/completions")]


def test_no_proxy_sends_the_call_direct(clean_proxy_env, fake):
    with Proxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url)
        clean_proxy_env.setenv("NO_PROXY", "127.0.0.1,localhost")
        transport(fake.url + "/v1").post_json("/chat/completions", BODY)
        assert proxy.seen == []


def test_a_proxy_s_credentials_are_sent_as_basic_auth(clean_proxy_env, fake):
    with Proxy(required="Basic " + base64.b64encode(b"gaia:s3cr et").decode()) as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://gaia:s3cr%20et@"))
        data = transport(fake.url + "/v1").post_json("/chat/completions", BODY)
        assert data["choices"] and proxy.credentials == [proxy.required]


def test_a_proxy_without_a_scheme_is_taken_as_http(clean_proxy_env, fake):
    with Proxy() as proxy:
        clean_proxy_env.setenv("HTTP_PROXY", proxy.url.removeprefix("http://"))
        transport(fake.url + "/v1").post_json("/chat/completions", BODY)
        assert proxy.seen == [("POST", fake.url + "/v1/chat/completions")]


def test_a_socks_proxy_fails_each_call_and_never_goes_around_it(clean_proxy_env, fake):
    clean_proxy_env.setenv("HTTP_PROXY", "socks5://127.0.0.1:1080")
    http = transport(fake.url + "/v1")  # built: start-up goes on
    before = len(fake.requests)
    with pytest.raises(ProviderError) as caught:
        http.post_json("/chat/completions", BODY)
    assert caught.value.kind == "unavailable" and "HTTP(S) proxies" in caught.value.message
    assert len(fake.requests) == before  # not sent around the proxy


def test_a_proxy_that_refuses_connections_is_unavailable_not_a_timeout(clean_proxy_env, fake):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        clean_proxy_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{held.getsockname()[1]}")
        with pytest.raises(ProviderError) as caught:
            transport(fake.url + "/v1").post_json("/chat/completions", BODY)
    assert caught.value.kind == "unavailable"


def test_a_redirect_is_a_bad_answer_and_never_followed(clean_proxy_env):
    with Scripted() as elsewhere, Scripted() as server:
        server.answer = (307, [("Location", elsewhere.url + "/v1/chat/completions")], b"")
        with pytest.raises(ProviderError) as caught:
            transport(server.url + "/v1").post_json("/chat/completions", BODY)
        error = caught.value
        assert error.kind == "bad_response" and error.upstream_status == 307
        assert elsewhere.url in error.message and "base_url" in error.message
        assert elsewhere.seen == []


def test_where_a_redirect_pointed_is_shown_without_credentials_query_or_controls(clean_proxy_env):
    with Scripted() as server:
        server.answer = (302, [("Location", "http://user:secret@elsewhere.example:81/v2/chat?token=abc\x1b[31m")], b"")
        with pytest.raises(ProviderError) as caught:
            transport(server.url).post_json("/chat/completions", BODY)
    message = caught.value.message
    assert "http://elsewhere.example:81/v2/chat" in message
    assert "secret" not in message and "token" not in message and "\x1b" not in message


def test_a_body_its_content_encoding_does_not_decode_is_a_bad_answer(clean_proxy_env):
    with Scripted() as server:
        server.answer = (200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")], b"not gzip at all")
        http = transport(server.url)
        with pytest.raises(ProviderError) as caught:
            http.post_json("/chat/completions", BODY)
        assert caught.value.kind == "bad_response"
        server.answer = (200, [("Content-Type", "text/event-stream"), ("Content-Encoding", "gzip")], b"not gzip")
        response = http.request("POST", "/chat/completions", BODY, stream=True)
        with pytest.raises(ProviderError) as caught:
            list(http.events(response))
        assert caught.value.kind == "bad_response"


def test_a_compressed_stream_is_decoded_into_its_events(clean_proxy_env):
    events = b"".join(b'data: {"n": %d}\n\n' % i for i in range(50)) + b"data: [DONE]\n\n"
    with Scripted() as server:
        server.answer = (200, [("Content-Type", "text/event-stream"), ("Content-Encoding", "gzip")],
                         gzip.compress(events))
        http = transport(server.url)
        response = http.request("POST", "/chat/completions", BODY, stream=True)
        assert [data for _, data in http.events(response)] == [f'{{"n": {i}}}' for i in range(50)] + ["[DONE]"]


def test_a_header_value_http_refuses_is_unavailable_not_a_crash(clean_proxy_env):
    with Scripted() as server:
        http = ProviderHTTP("openai", server.url, {"Authorization": "Bearer a\r\nInjected: yes"}, 2.0, 5.0)
        with pytest.raises(ProviderError) as caught:
            http.post_json("/chat/completions", BODY)
        assert caught.value.kind == "unavailable" and server.seen == []


def test_a_compressed_answer_is_decoded(clean_proxy_env):
    with Scripted() as server:
        server.answer = (200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
                         gzip.compress(json.dumps({"id": "x", "n": [1] * 1000}).encode()))
        assert transport(server.url).post_json("/chat/completions", BODY) == {"id": "x", "n": [1] * 1000}


def test_an_oversized_answer_is_refused(clean_proxy_env, monkeypatch):
    monkeypatch.setattr(provider_http, "MAX_BODY_BYTES", 1000)
    with Scripted() as server:
        server.answer = (200, [("Content-Type", "application/json")], json.dumps({"x": "y" * 2000}).encode())
        with pytest.raises(ProviderError) as caught:
            transport(server.url).post_json("/chat/completions", BODY)
        assert caught.value.kind == "bad_response" and "oversized" in caught.value.message


def test_an_error_answer_keeps_status_code_param_and_retry_after(clean_proxy_env, fake):
    fake.behaviour = Behaviour(status=400, error=("too long", "context_length_exceeded", "messages"))
    try:
        with pytest.raises(ProviderError) as caught:
            transport(fake.url + "/v1").post_json("/chat/completions", BODY)
    finally:
        fake.reset()
    error = caught.value
    assert (error.kind, error.upstream_status) == ("rejected", 400)
    assert (error.code, error.param) == ("context_length_exceeded", "messages")
    assert "too long" in error.message


def test_a_refused_connection_is_unavailable(clean_proxy_env):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        with pytest.raises(ProviderError) as caught:
            transport(f"http://127.0.0.1:{port}").post_json("/chat/completions", BODY)
    assert caught.value.kind == "unavailable"


def test_silence_past_the_read_timeout_is_a_timeout(clean_proxy_env):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        accepted = []
        threading.Thread(target=lambda: accepted.append(listening.accept()), daemon=True).start()
        port = listening.getsockname()[1]
        with pytest.raises(ProviderError) as caught:
            transport(f"http://127.0.0.1:{port}", read_timeout=0.3).post_json("/chat/completions", BODY)
        for connection, _ in accepted:
            connection.close()
    assert caught.value.kind == "timeout"


def test_a_stream_read_to_its_end_gives_its_connection_back(clean_proxy_env, fake):
    http = transport(fake.url + "/v1")
    for _ in range(2):
        response = http.request("POST", "/chat/completions", {**BODY, "stream": True}, stream=True)
        events = [data for _, data in http.events(response)]
        assert events[-1] == "[DONE]"
    pool = http.pool.connection_from_url(fake.url)
    assert pool.num_connections == 1
