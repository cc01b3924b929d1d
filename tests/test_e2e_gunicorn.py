"""End to end, as an operator and a client would: `flask --app wsgi db upgrade`,
`flask --app wsgi create-admin`, then `gunicorn -c gunicorn.conf.py wsgi:app` with two gevent
workers, called over real HTTP on 127.0.0.1. Runs on SQLite and on PostgreSQL (given as the
`postgres://` URL hosting platforms hand out).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from gaia_app.identity.apikeys import generate_api_key

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = (Path(sys.prefix) if sys.prefix != sys.base_prefix else ROOT / ".venv") / "bin"
API = "/api/v0.2"
KEY_RE = re.compile(r"^API key: (gaia_local_[0-9A-Za-z]{49})$", re.MULTILINE)
LIVE_TIMEOUT = 20.0
REVOCATION_BOUND = 2.5  # seconds from the revoke until every worker refuses the key
NO_PROXY = {"http": None, "https": None}  # only ever talk to 127.0.0.1 directly

# Child processes get only these from the test's environment, plus what each test sets:
# no DATABASE_URL, REDIS_URL, SERVICE_NAME, rate limits or proxies of a developer's shell.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
# An access-log line per request naming the worker that served it and the client's probe id.
PROBE_LOG_FORMAT = "gaia-access pid=%(p)s status=%(s)s probe=%({x-probe}i)s"
PROBE_LINE_RE = re.compile(r"gaia-access pid=<(\d+)> status=(\d+) probe=(\d+)")


# --------------------------------------------------------------------------- processes


def base_env(database_url: str, instance: Path, **extra: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update(DATABASE_URL=database_url, GAIA_INSTANCE_PATH=str(instance), NO_PROXY="*")
    env.update(extra)
    return env


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "wsgi", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, (
        f"flask {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, *, key: str | None = None, headers: dict | None = None,
            timeout: float = 10) -> requests.Response:
        """One request on a new connection (no Session), so requests spread over workers."""
        headers = dict(headers or {})
        if key is not None:
            headers["X-API-Key"] = key
        return requests.get(self.url + path, headers=headers, timeout=timeout, proxies=NO_PROXY)

    def worker_pids(self) -> set[int]:
        return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", self.log())}

    def probes(self) -> dict[int, tuple[int, int]]:
        """probe id -> (worker pid, status), from the access log."""
        return {
            int(probe): (int(pid), int(status))
            for pid, status, probe in PROBE_LINE_RE.findall(self.log())
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own group: master + workers
                self.process.wait(timeout=10)


def start_server(database_url: str, instance: Path, log_dir: Path, *, probe_log: bool = False,
                 workers: int | None = 2, **extra: str) -> Server:
    """(workers=None: gunicorn.conf.py's default, as an operator who sets nothing gets.)"""
    for _attempt in range(3):
        server = _spawn(database_url, instance, log_dir, probe_log, workers, extra)
        try:
            if _wait_until_live(server):
                return server
        except BaseException:
            server.stop()
            raise
        server.stop()  # another process took the port in between: try another one
    pytest.fail(f"gunicorn found no free port:\n{server.log()}")


def _spawn(database_url, instance, log_dir, probe_log, workers, extra) -> Server:
    port = free_port()
    if workers is not None:
        extra = {"WEB_CONCURRENCY": str(workers), **extra}
    env = base_env(database_url, instance, PORT=str(port), HOST="127.0.0.1", **extra)
    if probe_log:
        env.update(GAIA_ACCESS_LOG="1", GUNICORN_CMD_ARGS=f"--access-logformat '{PROBE_LOG_FORMAT}'")
    log_path = log_dir / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return Server(process, f"http://127.0.0.1:{port}", log_path)


def _wait_until_live(server: Server) -> bool:
    """True once /health/live answers 200; False when the port was taken."""
    deadline = time.monotonic() + LIVE_TIMEOUT
    while True:
        if "Connection in use" in server.log():
            return False
        if server.process.poll() is not None:
            pytest.fail(
                f"gunicorn exited with {server.process.returncode} before /health/live:\n{server.log()}"
            )
        try:
            if server.get("/health/live", timeout=1).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"/health/live did not answer within {LIVE_TIMEOUT} s:\n{server.log()}")
        time.sleep(0.1)


@pytest.fixture
def serve(tmp_path):
    servers: list[Server] = []

    def start(database_url: str, **extra) -> Server:
        instance = tmp_path / f"instance-{len(servers)}"
        instance.mkdir()
        server = start_server(database_url, instance, tmp_path, **extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def new_database_url(backend: str, directory: Path, request) -> str:
    if backend == "sqlite":
        return f"sqlite:///{directory / 'gaia.db'}"
    url = request.getfixturevalue("postgres").create()
    assert url.startswith("postgres://")  # the form Fly hands out must work as is
    return url


def problem(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"], body
    assert "Traceback" not in response.text
    return body


def read_revoked_at(database_url: str, key_id: str) -> float:
    from sqlalchemy import create_engine, select

    from gaia_app.config import normalize_database_url
    from gaia_app.models import ApiKey

    table = ApiKey.__table__
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            revoked_at = connection.execute(
                select(table.c.revoked_at).where(table.c.id == uuid.UUID(key_id))
            ).scalar_one()
    finally:
        engine.dispose()
    assert revoked_at is not None
    return revoked_at.timestamp()


# --------------------------------------------------------------------------- a deployment


@dataclass
class Deployment:
    database_url: str
    env: dict[str, str]
    admin_key: str
    server: Server


@contextmanager
def deployed(directory: Path, database_url: str, workers: int | None = 2, **settings: str):
    """Migrate, make the admin, serve: what an operator does on a new database."""
    instance = directory / "instance"
    env = base_env(database_url, instance, **settings)

    flask(env, "db", "upgrade")
    created = flask(env, "create-admin", "--email", "admin@gaia.dev")
    keys = KEY_RE.findall(created.stdout)
    assert len(keys) == 1, created.stdout

    # The revocation test polls at ~50 requests/s, far past the default 60/minute per key:
    # lift the limit so that it measures revocation, not rate limiting.
    server = start_server(database_url, instance, directory, probe_log=True, workers=workers,
                          **{"RATE_LIMIT_DEFAULT": "100000/minute", **settings})
    try:
        yield Deployment(database_url, env, keys[0], server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployment(backend, tmp_path_factory, request):
    directory = tmp_path_factory.mktemp(f"e2e-{backend}")
    with deployed(directory, new_database_url(backend, directory, request)) as running:
        yield running


@pytest.fixture(scope="module")
def redis_deployment(redis_url, tmp_path_factory):
    """With REDIS_URL, cached keys live 60 s: revocations must reach workers by Redis."""
    directory = tmp_path_factory.mktemp("e2e-redis")
    with deployed(directory, f"sqlite:///{directory / 'gaia.db'}", REDIS_URL=redis_url) as running:
        yield running


def test_health_is_healthy(deployment):
    response = deployment.server.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy", body
    assert body["database"]["status"] == "connected"
    assert body["database"]["migrations"]["status"] == "current"
    assert body["database"]["migrations"]["current"] == body["database"]["migrations"]["head"]
    assert deployment.server.get("/health/live").json() == {"status": "alive"}


def test_the_admin_key_works_over_http(deployment):
    server, key = deployment.server, deployment.admin_key

    providers = server.get(f"{API}/providers", key=key)
    assert providers.status_code == 200, providers.text
    body = providers.json()
    assert "local" in [provider["id"] for provider in body["providers"]]
    assert body["total_providers"] == len(body["providers"])

    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        models = server.get(f"{API}/models", headers=headers)
        assert models.status_code == 200, models.text
        listed = models.json()
        assert listed["total"] >= 1
        assert listed["total"] == len(listed["models"])
        assert {model["provider"] for model in listed["models"]} >= {"local"}


def test_bad_credentials_are_refused_over_http(deployment):
    server, key = deployment.server, deployment.admin_key

    missing = server.get(f"{API}/models")
    body = problem(missing, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "X-API-Key" in body["detail"]

    position = len("gaia_local_") + 10
    swapped = "A" if key[position] != "A" else "B"
    tampered = key[:position] + swapped + key[position + 1:]
    assert "checksum" in problem(server.get(f"{API}/models", key=tampered), 401)["detail"]
    truncated = key[:-1]
    problem(server.get(f"{API}/models", key=truncated), 401)
    unknown = generate_api_key("local")  # well-formed, right checksum, never issued
    assert "not recognised" in problem(server.get(f"{API}/models", key=unknown), 401)["detail"]
    foreign = generate_api_key("prod")
    assert "'prod'" in problem(server.get(f"{API}/models", key=foreign), 401)["detail"]

    assert server.get(f"{API}/models", key=key).status_code == 200
    assert key not in server.log()  # no key in the logs, not even refused ones
    assert tampered not in server.log()


class Prober:
    """Calls the API with one key, 4 requests at a time on new connections, until stopped."""

    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self.key = key
        self.records: dict[int, tuple[float, float, int | str]] = {}
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def _one(self, probe: int) -> tuple[float, float, int | str]:
        started = time.time()
        try:
            status = self.server.get(
                f"{API}/models", key=self.key, headers={"X-Probe": str(probe)}, timeout=10
            ).status_code
        except requests.RequestException as exc:
            status = f"{type(exc).__name__}: {exc}"
        return started, time.time(), status

    def _run(self) -> None:
        with ThreadPoolExecutor(4) as pool:
            while not self._stop.is_set():
                batch = [next(self._ids) for _ in range(4)]
                for probe, record in zip(batch, pool.map(self._one, batch)):
                    self.records[probe] = record
                time.sleep(0.05)

    def by_worker(self, since: float) -> dict[int, list[tuple[float, float, int | str]]]:
        """Requests started at or after `since`, grouped by the worker that served them."""
        served = self.server.probes()
        grouped: dict[int, list] = {}
        for probe, record in sorted(self.records.items()):
            if record[0] >= since and probe in served:
                grouped.setdefault(served[probe][0], []).append(record)
        return grouped


def test_revocation_reaches_every_worker(deployment):
    check_revocation(deployment)


def test_revocation_reaches_every_worker_with_redis(redis_deployment):
    health = redis_deployment.server.get("/health").json()
    assert health["broker"]["status"] == "connected", health
    check_revocation(redis_deployment)


def check_revocation(deployment: Deployment) -> None:
    server, env = deployment.server, deployment.env
    workers = server.worker_pids()
    assert len(workers) == 2, server.log()

    created = flask(env, "keys", "create", "--email", "admin@gaia.dev", "--name", "revoke-me")
    key = KEY_RE.findall(created.stdout)[0]
    hint = f"gaia_local_...{key[-4:]}"
    listed = flask(env, "keys", "list").stdout
    assert key not in listed and hashlib.sha256(key.encode()).hexdigest() not in listed
    lines = [line for line in listed.splitlines() if hint in line and "revoke-me" in line]
    assert len(lines) == 1, listed
    key_id = lines[0].split()[0]

    with Prober(server, key) as prober:
        # Both workers serve (and cache) the key before it is revoked.
        deadline = time.monotonic() + 10
        while {pid for pid, records in prober.by_worker(0).items()
               if any(r[2] == 200 for r in records)} != workers:
            assert time.monotonic() < deadline, f"the key did not reach both workers:\n{server.log()}"
            time.sleep(0.05)

        flask(env, "keys", "revoke", key_id)
        command_returned = time.time()
        revoked = read_revoked_at(deployment.database_url, key_id)

        # Poll until every worker has refused the key (a refusal is cached, so it stays).
        deadline = revoked + REVOCATION_BOUND + 3
        while True:
            after = prober.by_worker(revoked)
            refused_by = {pid for pid, records in after.items() if any(r[2] == 401 for r in records)}
            if refused_by >= workers:
                time.sleep(0.2)  # a few more rounds, to see that it stays refused
                break
            if time.time() > deadline:
                break
            time.sleep(0.05)

    after = prober.by_worker(revoked)
    everything = [record for record in prober.records.values() if record[0] >= revoked]
    errors = [record for record in everything if record[2] not in (200, 401)]
    assert not errors, errors[:5]

    report = []
    refused_at = {}
    for pid in sorted(workers):
        records = after.get(pid, [])
        first_refusal = min((end for _, end, status in records if status == 401), default=None)
        last_served = max((start for start, _, status in records if status == 200), default=None)
        refused_at[pid] = first_refusal
        report.append(
            f"worker {pid}: {len(records)} requests after the revoke, "
            + (f"first 401 at +{first_refusal - revoked:.3f} s" if first_refusal else "never refused")
            + (f", last 200 started at +{last_served - revoked:.3f} s" if last_served else ", no 200")
        )
        if first_refusal is not None:
            served_later = [r for r in records if r[2] == 200 and r[0] > first_refusal]
            assert not served_later, f"worker {pid} served the key again after refusing it: {report}"
    measured = (
        max(refused_at.values()) - revoked if all(refused_at.values()) else float("inf")
    )
    message = (
        f"every worker refused the revoked key {measured:.3f} s after revoked_at "
        f"(the revoke command returned at +{command_returned - revoked:.3f} s; "
        f"bound {REVOCATION_BOUND} s); " + "; ".join(report)
    )
    print(message)
    assert measured <= REVOCATION_BOUND, message
    all_refused = revoked + measured
    assert all(record[2] == 401 for record in everything if record[0] > all_refused), message

    # Only that key: the admin key still works on every request.
    assert {deployment.server.get(f"{API}/models", key=deployment.admin_key).status_code
            for _ in range(6)} == {200}


# --------------------------------------------------------------------------- broken databases


def test_unreachable_database(backend, serve, tmp_path):
    unreachable = {
        "postgresql": "postgres://postgres@127.0.0.1:1/nothing",  # a closed port
        "sqlite": f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'gaia.db'}",
    }[backend]
    server = serve(unreachable, workers=1)  # one worker is enough to see the report

    live = server.get("/health/live")
    assert live.status_code == 200 and live.json() == {"status": "alive"}

    started = time.monotonic()
    response = server.get("/health")
    elapsed = time.monotonic() - started
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["database"]["status"] == "disconnected"
    reason = body["database"]["error"]
    assert isinstance(reason, str) and reason.strip()
    assert {"name": "database", "status": "fail", "detail": reason} in body["checks"]
    assert elapsed < 10, f"/health took {elapsed:.1f} s"
    assert "Traceback" not in server.log()


def test_database_without_schema(backend, serve, tmp_path, request):
    database_url = new_database_url(backend, tmp_path, request)
    server = serve(database_url, workers=1)

    response = server.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"]["status"] == "connected"
    assert body["database"]["migrations"]["status"] == "uninitialized"
    details = [check["detail"] for check in body["checks"] if check["name"] == "migrations"]
    assert len(details) == 1 and "flask --app wsgi db upgrade" in details[0], body["checks"]

    key = generate_api_key("local")
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        refused = server.get(f"{API}/models", headers=headers)
        problem_body = problem(refused, 503)
        assert "db upgrade" in problem_body["detail"], problem_body
    assert "Traceback" not in server.log()

    # Following the advice repairs the running server, without a restart.
    env = base_env(database_url, tmp_path / "cli-instance")
    flask(env, "db", "upgrade")
    healed = server.get("/health").json()
    assert healed["status"] == "healthy", healed
    assert healed["database"]["migrations"]["status"] == "current"
    assert "not recognised" in problem(server.get(f"{API}/models", key=key), 401)["detail"]


def test_bad_configuration_stops_gunicorn(tmp_path):
    env = base_env(f"sqlite:///{tmp_path / 'gaia.db'}", tmp_path / "instance",
                   SERVICE_NAME="bogus", PORT=str(free_port()), HOST="127.0.0.1", WEB_CONCURRENCY="2")
    started = time.monotonic()
    result = subprocess.run(
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, start_new_session=True,
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "configuration error" in output and "SERVICE_NAME='bogus'" in output
    assert "gateway" in output
    # The arbiter stops instead of respawning workers that cannot load the app.
    assert len(re.findall(r"Booting worker", output)) <= 2, output
    assert elapsed < 20, f"gunicorn took {elapsed:.1f} s to give up"
    assert not (tmp_path / "gaia.db").exists()


def test_limits_are_exact_on_the_embedded_default(tmp_path):
    """SQLite, no Redis, gunicorn's default worker count: a key gets exactly its limit, a
    login exactly its tries, over many connections, and the 429 says when to come back."""
    with deployed(tmp_path, f"sqlite:///{tmp_path / 'gaia.db'}", workers=None,
                  RATE_LIMIT_DEFAULT="5/minute", AUTH_RATE_LIMIT="3/minute") as running:
        answers = []
        for _ in range(8):  # a new connection each time, as many clients would
            answers.append(requests.get(running.server.url + "/api/v0.2/models", proxies=NO_PROXY,
                                        headers={"X-API-Key": running.admin_key}, timeout=10))
        assert [r.status_code for r in answers] == [200] * 5 + [429] * 3
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 120
        logins = [
            requests.post(running.server.url + "/api/v0.2/auth/login", proxies=NO_PROXY, timeout=10,
                          json={"email": "nobody@example.com", "password": "not the password"}).status_code
            for _ in range(5)
        ]
        assert logins == [401] * 3 + [429] * 2


def test_a_chunked_body_past_the_limit_is_413(deployment):
    """Without Content-Length (chunked), the limit still holds, as a 413, not as bad JSON."""
    def chunks():
        yield b'{"message": "'
        for _ in range(2048):
            yield b"x" * 1024
        yield b'"}'

    for path in (f"{API}/chat", "/v1/chat/completions"):
        response = requests.post(
            deployment.server.url + path, data=chunks(), proxies=NO_PROXY, timeout=30,
            headers={"X-API-Key": deployment.admin_key, "Content-Type": "application/json"},
        )
        assert response.status_code == 413, (path, response.status_code, response.text[:300])
