"""Split mode: a gateway-only process forwards to a chat service over real HTTP.

(Its behaviour under faults: tests/test_gateway_faults.py.)
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from gaia_app.config import ConfigError
from tests.conftest import make_app

ROOT = Path(__file__).resolve().parent.parent
# Nothing listens there: the services a test does not call are refused at once.
NOWHERE = "http://127.0.0.1:9"


def gateway_app(database_url, tmp_path_factory, chat_url, **settings):
    """A gateway alone, forwarding chat to `chat_url` (auth and asset lead nowhere)."""
    return make_app(database_url, tmp_path_factory, SERVICE_NAME="gateway", CHAT_SERVICE_URL=chat_url,
                    AUTH_SERVICE_URL=NOWHERE, ASSET_SERVICE_URL=NOWHERE, **settings)


@pytest.fixture
def chat_service(database_url, tmp_path_factory, _session_app):
    app = make_app(database_url, tmp_path_factory, SERVICE_NAME="chat", GAIA_BUILD_ID="build-2")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def gateway(database_url, tmp_path_factory, chat_service):
    app = gateway_app(database_url, tmp_path_factory, chat_service, GAIA_BUILD_ID="build-1")
    return app.test_client()


def test_gateway_forwards_and_the_service_checks_the_key(gateway, make):
    key = make.key()
    response = gateway.get("/api/v0.2/models?provider=local", headers={"X-API-Key": key})
    assert response.status_code == 200
    assert response.get_json()["total"] >= 1
    denied = gateway.get("/api/v0.2/providers")
    assert denied.status_code == 401
    assert denied.content_type == "application/problem+json"
    assert gateway.get("/api/v0.2/models/nope", headers={"X-API-Key": key}).status_code == 404


def test_gateway_health_reports_the_remote_service_and_version_skew(gateway):
    body = gateway.get("/health").get_json()
    assert body["service"] == "gateway"
    assert body["remote"]["chat"]["status"] == "healthy"
    assert body["remote"]["chat"]["version"] == "build-2"
    assert body["version_skew"] == [{"service": "chat", "version": "build-2", "expected": "build-1"}]
    assert body["status"] == "degraded"


def test_an_unreachable_service_is_a_502_at_once(database_url, tmp_path_factory, _session_app):
    down = gateway_app(database_url, tmp_path_factory, NOWHERE).test_client()
    started = time.monotonic()
    response = down.get("/api/v0.2/models")
    assert time.monotonic() - started < 1.0
    assert response.status_code == 502 and response.content_type == "application/problem+json"
    assert response.headers["Retry-After"] == "5"
    assert "chat service" in response.get_json()["detail"]
    openai = down.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
    assert openai.status_code == 502 and openai.get_json()["error"]["type"] == "server_error"
    assert openai.headers["Retry-After"] == "5"
    assert down.get("/health").get_json()["remote"]["chat"]["status"] == "unreachable"


def test_a_gateway_without_a_service_url_does_not_start(tmp_path, tmp_path_factory):
    database_url = f"sqlite:///{tmp_path / 'gaia.db'}"
    with pytest.raises(ConfigError) as caught:
        make_app(database_url, tmp_path_factory, SERVICE_NAME="gateway",
                 AUTH_SERVICE_URL=NOWHERE, ASSET_SERVICE_URL=NOWHERE)
    message = str(caught.value)
    assert message.startswith("CHAT_SERVICE_URL is not set: the gateway forwards /api/v0.2/chat")
    assert "/v1" in message and "SERVICE_NAME=gateway,chat" in message
    # Serving chat in the same process needs no URL for it.
    both = make_app(database_url, tmp_path_factory, SERVICE_NAME="gateway,chat",
                    AUTH_SERVICE_URL=NOWHERE, ASSET_SERVICE_URL=NOWHERE)
    assert both.url_map.bind("").match("/api/v0.2/models")[0] == "chat.list_models"


def test_wsgi_names_the_missing_service_url_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SERVICE_URL")
           and k not in ("DATABASE_URL", "ENVIRONMENT", "SERVICE_NAME")}
    env.update(SERVICE_NAME="gateway", GAIA_INSTANCE_PATH=str(tmp_path),
               AUTH_SERVICE_URL=NOWHERE, CHAT_SERVICE_URL="localhost:8002")
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 4
    assert result.stderr.strip() == (
        "gaia: configuration error: CHAT_SERVICE_URL='localhost:8002' must be an http:// or "
        "https:// URL with a host, such as http://gaia-chat.internal:8080"
    )


@pytest.fixture
def slow_openai():
    from tests.fakes.llm_servers import Behaviour, FakeOpenAI

    with FakeOpenAI() as fake:
        fake.behaviour = Behaviour(reply=" ".join(f"w{i}" for i in range(12)), chunk_delay=0.15)
        yield fake


def test_a_chat_stream_passes_through_the_gateway_as_it_is_made(
    database_url, tmp_path_factory, _session_app, slow_openai, make
):
    chat = make_app(database_url, tmp_path_factory, SERVICE_NAME="chat",
                    OPENAI_API_KEY=slow_openai.api_key, OPENAI_BASE_URL=slow_openai.url + "/v1")
    server = make_server("127.0.0.1", 0, chat, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gateway = gateway_app(database_url, tmp_path_factory,
                              f"http://127.0.0.1:{server.server_port}").test_client()
        started = time.monotonic()
        response = gateway.post("/api/v0.2/chat", json={"message": "hi", "model": "gpt-4o", "stream": True},
                                headers={"X-API-Key": make.key()}, buffered=False)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        arrivals, body = [], b""
        for piece in response.response:
            body += piece
            if b'"content":"w' in piece or b'"content":" w' in piece:
                arrivals.append(time.monotonic() - started)
        response.close()
        assert body.endswith(b"data: [DONE]\n\n")
        # Twelve words 0.15 s apart: the first reaches the client long before the last.
        assert len(arrivals) >= 2 and arrivals[-1] - arrivals[0] > 1.0, arrivals
    finally:
        server.shutdown()


def test_the_gateway_shares_one_pool_and_keeps_no_cookies(
    database_url, tmp_path_factory, _session_app, make
):
    """One connection pool for every request of the process (greenlets and threads alike, so
    its connections are reused); a cookie a service sets never rides along with a later
    request."""
    from blueprints.gateway import forwarding

    chat = make_app(database_url, tmp_path_factory, SERVICE_NAME="chat")
    inner = chat.wsgi_app
    cookies_seen = []

    def setting_a_cookie(environ, start_response):
        cookies_seen.append(environ.get("HTTP_COOKIE"))

        def with_cookie(status, headers, exc_info=None):
            return start_response(status, headers + [("Set-Cookie", "session=someone-else")], exc_info)

        return inner(environ, with_cookie)

    chat.wsgi_app = setting_a_cookie
    server = make_server("127.0.0.1", 0, chat, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # (The test client keeps no cookies either: any the service sees came from the gateway.)
        gateway = gateway_app(database_url, tmp_path_factory,
                              f"http://127.0.0.1:{server.server_port}").test_client(use_cookies=False)
        headers = {"X-API-Key": make.key()}
        for _ in range(2):
            response = gateway.get("/api/v0.2/models?provider=local", headers=headers, buffered=True)
            assert response.status_code == 200 and "someone-else" in response.headers["Set-Cookie"]
        assert cookies_seen == [None, None]
        seen = []
        thread = threading.Thread(target=lambda: seen.append(forwarding._pool()))
        thread.start()
        thread.join()
        assert seen == [forwarding._pool()]
    finally:
        server.shutdown()
