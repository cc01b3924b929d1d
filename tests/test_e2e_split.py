"""Split mode on one machine, started the way a developer starts it: `scripts/split.sh` runs the
Procfile with honcho (gateway, auth, chat and asset gunicorns and a Celery worker) on a
PostgreSQL database and a Redis server of this module's own, and `scripts/test.sh ... all`
passes through the gateway. Then the chat service stops: its routes answer 502/503/504 at once
while the auth and asset services keep answering, and they answer again once chat is back.

The chat service runs under a honcho of its own (`scripts/split.sh chat`), because honcho stops
every process it runs when one of them exits.

Skipped without PostgreSQL or Redis (a failure instead with GAIA_TEST_REQUIRE_POSTGRES or
GAIA_TEST_REQUIRE_REDIS set to 1).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import REQUIRE_REDIS, _skip_or_fail
from tests.test_e2e_asset_worker import RedisServer, wait_for
from tests.test_e2e_gunicorn import KEY_RE, NO_PROXY, ROOT, VENV_BIN, base_env, flask, free_port, problem

API = "/api/v0.2"
OFFSETS = {"gateway": 0, "auth": 1, "chat": 2, "asset": 3}  # from GAIA_SPLIT_PORT, as the Procfile says
START_TIMEOUT = 30.0  # seconds for a split.sh run's services to answer
RESTART_TIMEOUT = 20.0
FAIL_FAST = 1.0  # seconds within which a route of a stopped service must answer
CHAT_ROUTES = (
    ("GET", f"{API}/models", None),
    ("GET", "/v1/models", None),
    ("POST", f"{API}/chat", {"message": "Is anyone there?"}),
)
STARTED_RE = re.compile(r"\| \S+ started \(pid=(\d+)\)$", re.MULTILINE)

pytestmark = pytest.mark.usefixtures("redis_url", "postgres")  # skip before any setup


# --------------------------------------------------------------------------- processes


@dataclass
class Honcho:
    """One `scripts/split.sh` run: honcho, then a process group per Procfile process it starts."""

    names: tuple[str, ...]
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C would: honcho stops its processes (SIGKILL after 5 s). Then
        SIGKILL to every group it started, in case honcho itself did not get that far."""
        groups = [int(pid) for pid in STARTED_RE.findall(self.log())]
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        for group in (self.process.pid, *groups):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)


@dataclass
class Split:
    """The processes of one split-mode deployment, and how to call its gateway."""

    env: dict[str, str]
    logs: Path
    runs: list[Honcho] = field(default_factory=list)
    admin_key: str = ""

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{int(self.env['GAIA_SPLIT_PORT']) + OFFSETS[service]}"

    def start(self, *names: str, timeout: float = START_TIMEOUT) -> Honcho:
        """`scripts/split.sh NAME...`, and wait until its web services answer."""
        log_path = self.logs / f"split-{len(self.runs)}-{'-'.join(names)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["bash", str(ROOT / "scripts" / "split.sh"), *names], env=self.env, cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        run = Honcho(names, process, log_path)
        self.runs.append(run)
        for service in (name for name in names if name in OFFSETS):
            wait_for(f"{service} to answer /health/live", lambda: self._live(run, service), timeout)
        return run

    def _live(self, run: Honcho, service: str) -> bool:
        if run.process.poll() is not None:
            raise AssertionError(f"split.sh {' '.join(run.names)} exited with "
                                 f"{run.process.returncode}:\n{run.log()}")
        try:
            return requests.get(self.url(service) + "/health/live", timeout=1,
                                proxies=NO_PROXY).status_code == 200
        except requests.RequestException:
            return False

    def stop_all(self) -> None:
        for run in self.runs:
            run.stop()

    def call(self, method: str, path: str, body=None, *, headers=None, timeout: float = 10):
        """A request to the gateway, with the admin key unless other headers are given."""
        return requests.request(method, self.url("gateway") + path, json=body, timeout=timeout,
                                headers=headers or {"X-API-Key": self.admin_key}, proxies=NO_PROXY)


def free_port_block(count: int = len(OFFSETS)) -> int:
    """A free port whose next `count - 1` ports are free too (the ports split mode uses)."""
    for _attempt in range(50):
        base = free_port()
        if base + count <= 65536 and all(_is_free(base + offset) for offset in range(1, count)):
            return base
    pytest.fail(f"found no {count} free ports in a row")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def venv_view(directory: Path) -> Path:
    """A GAIA_VENV that is the project's venv (symlinks) with a current install stamp for
    requirements-dev.txt, so that split.sh's `ensure_venv` installs nothing."""
    venv = VENV_BIN.parent
    if not (VENV_BIN / "honcho").exists():
        pytest.fail(f"honcho is not installed in {venv}: pip install -r requirements-dev.txt")
    view = directory / "venv"
    view.mkdir()
    for entry in venv.iterdir():
        if not entry.name.startswith(".installed-"):
            (view / entry.name).symlink_to(entry)
    # _venv.sh hashes requirements.txt followed by the requirements file being ensured.
    requirements = (ROOT / "requirements.txt").read_bytes() + (ROOT / "requirements-dev.txt").read_bytes()
    (view / ".installed-requirements-dev.txt").write_text(hashlib.sha256(requirements).hexdigest() + "\n")
    return view


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def split_redis(redis_url, tmp_path_factory):
    """A Redis server of this module's own: the Celery queue and the caches see no other test."""
    server = RedisServer(tmp_path_factory.mktemp("split-redis"))
    if server.binary is None:
        _skip_or_fail("redis-server is not installed (split mode gets a private one)", REQUIRE_REDIS)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def split(postgres, split_redis, tmp_path_factory):
    directory = tmp_path_factory.mktemp("split")
    env = base_env(
        postgres.create(), directory / "instance", REDIS_URL=split_redis.url,
        GAIA_SPLIT_PORT=str(free_port_block()), GAIA_VENV=str(venv_view(directory)),
        PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    deployment = Split(env, directory)
    try:
        deployment.start("gateway", "auth", "asset", "worker")  # migrates the database first
        deployment.start("chat")
        created = flask(env, "create-admin", "--email", "admin@gaia.dev")
        keys = KEY_RE.findall(created.stdout)
        assert len(keys) == 1, created.stdout
        deployment.admin_key = keys[0]
        yield deployment
    finally:
        deployment.stop_all()
    for run in deployment.runs:
        assert "Traceback" not in run.log(), run.log()


# --------------------------------------------------------------------------- tests


def test_the_smoke_test_passes_through_the_gateway(split):
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test.sh"), "--url", split.url("gateway"),
         "--api-key", split.admin_key, "all"],
        env=split.env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed, 0 failed" in result.stdout, result.stdout
    assert "service gateway" in result.stdout
    assert split.admin_key not in result.stdout
    worker = next(run for run in split.runs if "worker" in run.names)
    assert len(re.findall(r"Task gaia\.assets\.generate\[\S+\] succeeded", worker.log())) == 4, worker.log()


def test_every_service_signs_and_checks_with_one_secret(split):
    """A token the auth service signs is accepted by the chat and asset services."""
    signed_up = split.call("POST", f"{API}/auth/register", {"email": "split@example.com",
                                                          "password": "a long passphrase"}, headers={})
    assert signed_up.status_code == 201, signed_up.text
    bearer = {"Authorization": f"Bearer {signed_up.json()['access_token']}"}
    for path in (f"{API}/auth/me", f"{API}/models", f"{API}/jobs"):
        response = split.call("GET", path, headers=bearer)
        assert response.status_code == 200, (path, response.text)
    # No GAIA_SECRET_KEY: the key is the instance folder's file, made once before they started.
    assert "GAIA_SECRET_KEY" not in split.env
    assert (Path(split.env["GAIA_INSTANCE_PATH"]) / "secret_key").is_file()


def test_a_stopped_chat_service_fails_fast_and_comes_back(split):
    health = split.call("GET", "/health").json()
    assert {name: remote["status"] for name, remote in health["remote"].items()} == {
        "auth": "healthy", "chat": "healthy", "asset": "healthy"}, health

    chat = next(run for run in split.runs if run.names == ("chat",))
    chat.stop()
    for method, path, body in CHAT_ROUTES:
        started = time.monotonic()
        response = split.call(method, path, body)
        elapsed = time.monotonic() - started
        assert response.status_code in (502, 503, 504), (path, response.status_code, response.text)
        assert elapsed < FAIL_FAST, f"{method} {path} took {elapsed:.2f} s"
        if path.startswith("/v1"):
            assert response.headers["Content-Type"].startswith("application/json"), response.headers
            error = response.json()["error"]
            assert error["type"] == "server_error" and "chat" in error["message"], error
        else:
            assert "chat" in problem(response, response.status_code)["detail"]
    for path in (f"{API}/keys", f"{API}/jobs"):
        response = split.call("GET", path)
        assert response.status_code == 200, (path, response.text)

    health = split.call("GET", "/health")
    report = health.json()
    assert health.status_code == 200 and report["status"] == "degraded", report
    assert report["remote"]["chat"]["status"] == "unreachable", report
    assert report["remote"]["auth"]["status"] == report["remote"]["asset"]["status"] == "healthy"
    assert {"name": "remote:chat", "status": "warn", "detail": "unreachable"} in report["checks"]

    split.start("chat", timeout=RESTART_TIMEOUT)
    for method, path, body in CHAT_ROUTES:
        response = split.call(method, path, body)
        assert response.status_code == 200, (path, response.text)
    assert split.call("GET", "/health").json()["remote"]["chat"]["status"] == "healthy"
