"""Request ids and log lines: an `X-Request-ID` on every response, the same id through the
gateway to the service behind it, and log lines (JSON when asked) that name the request and
its user but never a credential."""

from __future__ import annotations

import json
import logging
import re
import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from gaia_app.logs import MASK, redact
from gaia_app.state import gaia
from gaia_app.request_ids import well_formed
from tests.conftest import Accounts, make_app
from tests.test_e2e_asset_worker import (  # noqa: F401 - fixtures: a worker, its Redis and database
    deployment,
    migrated_database,
    nats_url,
    private_redis,
    sender,
    wait_for_status,
)
from tests.test_e2e_gunicorn import KEY_RE, NO_PROXY, base_env, flask, start_server

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/health/live", 200),
    ("GET", "/api/v0.2/models", 401),
    ("GET", "/v1/models", 401),
    ("GET", "/api/v0.2/no-such-thing", 404),
    ("POST", "/api/v0.2/auth/login", 400),
])
def test_every_response_carries_a_new_request_id(client, method, path, status):
    first = client.open(path, method=method, data="{", content_type="application/json")
    second = client.open(path, method=method, data="{", content_type="application/json")
    assert first.status_code == second.status_code == status
    ids = [first.headers.get_all("X-Request-ID"), second.headers.get_all("X-Request-ID")]
    assert all(len(found) == 1 and GENERATED.fullmatch(found[0]) for found in ids), ids
    assert ids[0] != ids[1]


@pytest.mark.parametrize("given", ["abc-123", "7f0c2a4e-1111-4d6b-9b7e-0a1b2c3d4e5f", "x" * 128,
                                   "trace:1/span=2+3@edge.example"])
def test_a_well_formed_request_id_is_kept(client, given):
    response = client.get("/health/live", headers={"X-Request-ID": given})
    assert response.headers.get_all("X-Request-ID") == [given]


@pytest.mark.parametrize("given", ["", "has space", "x" * 129, "semi;colon", "quote\"d", "tab\there",
                                   "caf\u00e9"])
def test_a_malformed_request_id_is_replaced(client, given):
    response = client.get("/health/live", headers={"X-Request-ID": given})
    assert GENERATED.fullmatch(response.headers["X-Request-ID"]), response.headers
    assert well_formed(given) is None


def test_the_access_line_names_request_route_status_and_user(client, make, caplog):
    key = make.key()
    with caplog.at_level(logging.INFO, logger="gaia.request"):
        client.get("/api/v0.2/models", headers={"X-API-Key": key, "X-Request-ID": "line-1"})
    (line,) = [r for r in caplog.records if r.name == "gaia.request"]
    assert (line.request_id, line.method, line.route, line.status) == (
        "line-1", "GET", "/api/v0.2/models", 200)
    assert line.user_id and line.latency_ms >= 0
    assert key not in line.getMessage()


# --------------------------------------------------------------------------- through the gateway


@pytest.fixture
def chat_service(database_url, tmp_path_factory, _session_app):
    app = make_app(database_url, tmp_path_factory, SERVICE_NAME="chat")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_gateway_hands_its_request_id_to_the_service(database_url, tmp_path_factory, chat_service,
                                                         make, caplog):
    gateway = make_app(database_url, tmp_path_factory, SERVICE_NAME="gateway,auth,asset",
                       CHAT_SERVICE_URL=chat_service).test_client()
    key = make.key()
    with caplog.at_level(logging.INFO, logger="gaia.request"):
        given = gateway.get("/api/v0.2/models", headers={"X-API-Key": key, "X-Request-ID": "edge-7"},
                            buffered=True)
        made = gateway.get("/api/v0.2/models", headers={"X-API-Key": key}, buffered=True)
    assert given.status_code == made.status_code == 200
    assert given.headers.get_all("X-Request-ID") == ["edge-7"]
    (made_id,) = made.headers.get_all("X-Request-ID")
    assert GENERATED.fullmatch(made_id)
    lines = [(r.request_id, r.user_id is not None) for r in caplog.records if r.name == "gaia.request"]
    # Each id twice: the gateway's line (no user: it does not authenticate) and the service's.
    assert sorted(lines) == sorted([("edge-7", False), ("edge-7", True), (made_id, False), (made_id, True)])


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize("secret, kept, hidden", [
    ("gaia_local_" + "A1b2C3d4E5" * 5, "", "A1b2C3d4E5"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "", "eyJzdWIiOiIxIn0"),
    ("Bearer abcdefgh12345678", "", "abcdefgh12345678"),
    ("password=hunter22", "password=", "hunter22"),
    ('"api_key": "sk-live-123456"', '"api_key":', "sk-live-123456"),
])
def test_credentials_are_masked_in_any_line(secret, kept, hidden):
    masked = redact(f"before {secret} after")
    assert masked.startswith(f"before {kept}{MASK}") and masked.endswith(" after"), masked
    assert hidden not in masked


# --------------------------------------------------------------------------- gunicorn's lines


def _secrets_and_requests(url: str, admin_key: str) -> list[str]:
    """Signs up, signs in, uses every credential kind; returns every secret used."""
    password = "correct horse battery staple 42"
    session = requests.Session()
    session.proxies.update(NO_PROXY)
    registered = session.post(f"{url}/api/v0.2/auth/register",
                              json={"email": "logs@example.com", "password": password}, timeout=10)
    assert registered.status_code == 201, registered.text
    tokens = session.post(f"{url}/api/v0.2/auth/login",
                          json={"email": "logs@example.com", "password": password}, timeout=10).json()
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert session.get(f"{url}/api/v0.2/auth/me", headers={"Authorization": f"Bearer {access}"},
                       timeout=10).status_code == 200
    assert session.get(f"{url}/api/v0.2/models", headers={"X-API-Key": admin_key},
                       timeout=10).status_code == 200
    session.get(f"{url}/api/v0.2/models", headers={"X-API-Key": admin_key[:-3] + "xyz"}, timeout=10)
    session.post(f"{url}/api/v0.2/auth/login", json={"email": "logs@example.com", "password": "wrong" * 3},
                 timeout=10)
    session.post(f"{url}/api/v0.2/auth/refresh", json={"refresh_token": refresh}, timeout=10)
    return [password, access, refresh, admin_key, admin_key[:-3] + "xyz", "wrong" * 3]


@pytest.fixture
def json_logged_server(tmp_path):
    instance = tmp_path / "instance"
    url = f"sqlite:///{tmp_path / 'gaia.db'}"
    env = base_env(url, instance)
    flask(env, "db", "upgrade")
    keys = KEY_RE.findall(flask(env, "create-admin", "--email", "admin@example.com").stdout)
    server = start_server(url, instance, tmp_path, workers=1, LOG_FORMAT="json",
                          RATE_LIMIT_DEFAULT="1000/minute", AUTH_RATE_LIMIT="1000/minute")
    yield server, keys[0]
    server.stop()


def test_json_lines_name_the_request_and_never_a_credential(json_logged_server):
    server, admin_key = json_logged_server
    secrets = _secrets_and_requests(server.url, admin_key)
    server.get("/api/v0.2/models", key=admin_key, headers={"X-Request-ID": "find-me-1"})
    server.stop()
    log = server.log()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all({"timestamp", "level", "logger", "message", "service"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "gaia.request"]
    assert {line["route"] for line in access} >= {"/api/v0.2/auth/login", "/api/v0.2/models"}
    found = [line for line in access if line["request_id"] == "find-me-1"]
    assert len(found) == 1 and found[0]["status"] == 200 and found[0]["user_id"]
    assert found[0]["service"] == "all" and found[0]["latency_ms"] > 0
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # the server's own, as JSON
    for secret in secrets:
        assert secret not in log, "a credential reached the log"


def test_text_lines_on_the_embedded_default(tmp_path):
    instance = tmp_path / "instance"
    url = f"sqlite:///{tmp_path / 'gaia.db'}"
    flask(base_env(url, instance), "db", "upgrade")
    server = start_server(url, instance, tmp_path, workers=1)
    try:
        server.get("/health/live", headers={"X-Request-ID": "human-1"})
    finally:
        server.stop()
    (line,) = [line for line in server.log().splitlines() if "[human-1]" in line]
    assert "INFO" in line and "gaia.request" in line and "GET /health/live 200" in line
    assert not line.startswith("{")


# --------------------------------------------------------------------------- into Celery tasks


def test_a_job_s_worker_lines_carry_the_request_id_that_sent_it(sender, deployment):
    worker = deployment.wait_ready(deployment.start_worker(concurrency=1, LOG_FORMAT="json"))
    key = Accounts(sender).key("traced@example.com")
    response = sender.test_client().post(
        "/api/v0.2/assets/generate", json={"category": "image", "description": "a traced lighthouse"},
        headers={"X-API-Key": key, "X-Request-ID": "job-trace-1"},
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.headers["X-Request-ID"] == "job-trace-1"
    wait_for_status(sender, response.get_json()["job_id"], "succeeded", timeout=30)

    def logged():
        return [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]

    # The worker's child writes its last lines just after the status it stored.
    deadline = time.monotonic() + 10
    while not any("succeeded" in line["message"] for line in logged()) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = logged()
    traced = [line for line in lines if line.get("request_id") == "job-trace-1"]
    assert traced, worker.log()
    assert all(line["service"] == "worker" for line in traced)
    assert any("succeeded" in line["message"] for line in traced), traced
    # Lines made outside the task (the worker starting, the sweeper) name no request.
    assert any(line.get("request_id") is None for line in lines)


def test_a_job_run_in_the_web_process_carries_the_request_id(app, client, make):
    """Without Redis the job runs on a thread of the web process: its lines name the request."""
    from gaia_app.request_ids import current_request_id

    seen: list[tuple[str, str | None]] = []

    class Publisher:
        def publish(self, subject, payload):
            seen.append((str(payload.get("job_id")), current_request_id()))

        def close(self):
            pass

    gaia(app).assets.use(events=Publisher())
    key = make.key(scopes=["assets"])
    response = client.post("/api/v0.2/assets/generate", headers={"X-API-Key": key, "X-Request-ID": "inline-7"},
                           json={"category": "audio", "description": "a traced bell", "options": {"duration": 0.2}})
    assert response.status_code == 202, response.get_data(as_text=True)
    job = response.get_json()["job_id"]
    for _ in range(400):
        if client.get(f"/api/v0.2/jobs/{job}", headers={"X-API-Key": key}).get_json()["status"] == "succeeded":
            break
        threading.Event().wait(0.05)
    traced = [request_id for job_id, request_id in seen if job_id == job]
    assert traced and set(traced) == {"inline-7"}, seen
