"""Asset jobs with real processes: `celery -A celery_worker worker` (prefork) on a Redis of its
own, PostgreSQL as the system of record, NATS carrying the `asset.generation.*` events.

Each test starts its workers as an operator would, sends jobs the way the web process does
(a committed row, then `gaia(app).assets.dispatch`), breaks something for real (SIGKILL of a
pool child, of a whole worker, a Redis restart that loses the queue, a provider that always
answers 503) and checks what the database, the storage folder, NATS and Flower then show.

Skipped without PostgreSQL, Redis or NATS (a failure instead with GAIA_TEST_REQUIRE_POSTGRES,
GAIA_TEST_REQUIRE_REDIS or GAIA_TEST_REQUIRE_NATS set to 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import text

from gaia_app import accounts
from gaia_app.celery_app import celery_for
from gaia_app.extensions import db
from gaia_app.jobs import events
from gaia_app.models import Asset, AssetJob
from gaia_app.state import gaia
from gaia_app.storage import storage_from_url
from tests.conftest import REQUIRE_REDIS, _skip_or_fail, make_app
from tests.fakes.asset_servers import FakeOpenAIImages, Fault
from tests.test_e2e_gunicorn import NO_PROXY, ROOT, VENV_BIN, base_env, flask, free_port

NATS_TEST_URL = os.environ.get("GAIA_TEST_NATS_URL", "nats://127.0.0.1:4222")
REQUIRE_NATS = os.environ.get("GAIA_TEST_REQUIRE_NATS") == "1"
HOST = socket.gethostname()
FORMATS = {"image": "png", "texture": "png", "audio": "wav", "model3d": "glb"}
LEASE_SECONDS = 2.0
# Short enough for a quick module, long enough for two shared cores.
JOB_TIMINGS = {
    "ASSET_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
    "ASSET_JOB_SWEEP_INTERVAL": "0.5",
    "ASSET_JOB_REDISPATCH_AFTER": "2",
    "ASSET_JOB_RETRY_DELAY": "0.2",
    "ASSET_JOB_MAX_ATTEMPTS": "3",
}
EVENT_GRACE = 1.0  # seconds to wait for a duplicate event that must not come

pytestmark = pytest.mark.usefixtures("nats_url", "redis_url", "postgres")  # skip before any setup


# --------------------------------------------------------------------------- waiting


def wait_for(what: str, check: Callable[[], object], timeout: float, interval: float = 0.1):
    """`check()`'s first truthy value within `timeout` seconds; else fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- processes


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the process group a `start_new_session=True` child leads."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=10)


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the command name's ")"


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class RedisServer:
    """A private `redis-server` without persistence: restarting it loses every queue."""

    def __init__(self, folder: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)

    def start(self) -> None:
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        wait_for("the private Redis to answer", self._answers, timeout=10, interval=0.05)

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None


@dataclass
class Process:
    """A worker or Flower: its process group, log and Celery hostname."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def hostname(self) -> str:
        return f"{self.name}@{HOST}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        kill_group(self.process)

    def pool_children(self) -> set[int]:
        """The prefork pool's processes, found by scanning /proc for this worker's children."""
        return {int(entry.name) for entry in Path("/proc").iterdir()
                if entry.name.isdigit() and parent_pid(int(entry.name)) == self.process.pid}


@dataclass
class Deployment:
    """What one test runs: workers and Flower, on one database, Redis and storage folder."""

    env: dict[str, str]
    instance: Path
    logs: Path
    started: list[Process] = field(default_factory=list)

    def _spawn(self, name: str, args: list[str], extra: dict[str, str]) -> Process:
        log_path = self.logs / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [str(VENV_BIN / "celery"), "-A", "celery_worker", *args],
                env={**self.env, **extra}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Process(name, process, log_path)
        self.started.append(started)
        return started

    def start_worker(self, *, concurrency: int = 2, **extra: str) -> Process:
        name = f"w{len(self.started)}-{uuid.uuid4().hex[:6]}"
        return self._spawn(name, ["worker", "--concurrency", str(concurrency), "--pool", "prefork",
                                  "--loglevel", "INFO", "--hostname", f"{name}@%h"], extra)

    def start_flower(self, port: int, credentials: str) -> Process:
        name = f"flower-{uuid.uuid4().hex[:6]}"
        return self._spawn(name, ["flower", f"--port={port}", "--address=127.0.0.1",
                                  f"--basic-auth={credentials}"], {})

    def wait_ready(self, worker: Process, timeout: float = 30) -> Process:
        ready = re.compile(rf"{re.escape(worker.hostname)} ready\.")

        def is_ready() -> bool:
            if worker.process.poll() is not None:
                raise AssertionError(f"worker {worker.name} exited early:\n{worker.log()}")
            return bool(ready.search(worker.log()))

        wait_for(f"worker {worker.name} to be ready", is_ready, timeout)
        return worker

    def storage(self):
        return storage_from_url(None, instance_path=str(self.instance))

    def stored_files(self) -> list[Path]:
        folder = self.instance / "assets"
        return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []

    def stop_all(self) -> None:
        for process in self.started:
            process.kill()


# --------------------------------------------------------------------------- NATS


class EventLog:
    """Every `asset.generation.*` event NATS carries while it is open, received on a thread
    of its own (nats-py is asyncio; the tests are not)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats-events", daemon=True)
        self._client = None

    def __enter__(self) -> EventLog:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._subscribe(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _subscribe(self) -> None:
        import nats

        self._client = await nats.connect(self.url, connect_timeout=2, max_reconnect_attempts=0)
        await self._client.subscribe("asset.generation.>", cb=self._on_message)
        await self._client.flush()  # the server has the subscription before any job starts

    async def _on_message(self, message) -> None:
        with self._lock:
            self.received.append((message.subject, json.loads(message.data)))

    def of(self, job_id) -> list[tuple[str, dict]]:
        with self._lock:
            return [(subject, payload) for subject, payload in self.received
                    if payload.get("job_id") == str(job_id)]

    def subjects(self, job_id) -> list[str]:
        return [subject for subject, _ in self.of(job_id)]

    def count(self, job_id, subject: str) -> int:
        return self.subjects(job_id).count(subject)

    def settled_counts(self, job_ids, subject: str, timeout: float = 10) -> list[int]:
        """How many `subject` events each job has, once each had one and a late duplicate
        had time to come."""
        for job_id in job_ids:
            wait_for(f"a {subject} event of job {job_id}", lambda: self.count(job_id, subject), timeout)
        time.sleep(EVENT_GRACE)
        return [self.count(job_id, subject) for job_id in job_ids]

    def settled_count(self, job_id, subject: str) -> int:
        return self.settled_counts([job_id], subject)[0]


def nats_problem(url: str) -> str | None:
    host, _, port = url.split("://", 1)[1].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1) as sock:
            if not sock.recv(7).startswith(b"INFO"):
                return f"{url} does not speak NATS"
    except OSError as exc:
        return f"NATS not reachable at {url}: {exc}"
    return None


# --------------------------------------------------------------------------- jobs


def new_job(app, *, category: str = "image", provider: str = "builtin", description: str | None = None):
    """A queued job and its pending asset, as the asset route commits them."""
    description = description or f"a {category} of a lighthouse, {uuid.uuid4().hex[:8]}"
    with app.app_context():
        user = accounts.find_user_by_email("worker-e2e@example.com") or accounts.create_user(
            "worker-e2e@example.com")
        db.session.flush()
        asset = Asset(user_id=user.id, status="pending", category=category, format=FORMATS[category],
                      description=description, provider=provider, details={})
        db.session.add(asset)
        db.session.flush()
        job = AssetJob(status="queued", asset_id=asset.id, user_id=user.id,
                       request={"category": category, "description": description, "style": None,
                                "options": {}, "seed": 7, "provider": provider},
                       max_attempts=gaia(app).settings.assets.max_attempts, progress=0, attempts=0,
                       cancel_requested=False, dispatched_at=datetime.now(timezone.utc))
        db.session.add(job)
        db.session.commit()
        return job.id


def send_job(app, **fields):
    job_id = new_job(app, **fields)
    gaia(app).assets.dispatch(job_id)
    return job_id


def job_row(app, job_id) -> AssetJob:
    with app.app_context():
        try:
            job = db.session.get(AssetJob, job_id)
            db.session.expunge(job)
            return job
        finally:
            db.session.remove()


def asset_row(app, asset_id) -> Asset:
    with app.app_context():
        try:
            asset = db.session.get(Asset, asset_id)
            db.session.expunge(asset)
            return asset
        finally:
            db.session.remove()


def wait_for_status(app, job_id, status: str, timeout: float) -> AssetJob:
    def reached():
        job = job_row(app, job_id)
        if job.status in ("succeeded", "failed", "cancelled") and job.status != status:
            raise AssertionError(f"job {job_id} ended {job.status}: {job.error_kind}: {job.error}")
        return job if job.status == status else None

    return wait_for(f"job {job_id} to be {status}", reached, timeout)


def ended_or_retried(app, job_id) -> AssetJob | None:
    job = job_row(app, job_id)
    return job if job.status in ("succeeded", "failed", "cancelled") or job.attempts > 1 else None


def wait_until_generating(app, job_id, timeout: float = 20) -> AssetJob:
    """The job once a runner claimed it and reported progress (so it is mid-generation)."""
    return wait_for(f"job {job_id} to report progress",
                    lambda: (job := job_row(app, job_id)).status == "running" and job.progress > 0 and job,
                    timeout, interval=0.05)


def pid_of_lease_owner(owner: str) -> int:
    """`celery:<worker hostname>:<host>:<pid>:<random>` (`runner_identity`)."""
    return int(owner.rsplit(":", 2)[1])


def assert_stored_once(app, deployment: Deployment, job: AssetJob) -> Asset:
    asset = asset_row(app, job.asset_id)
    assert asset.status == "ready" and asset.size_bytes > 0 and len(asset.sha256) == 64
    storage = deployment.storage()
    assert storage.exists(asset.storage_key)
    data = b"".join(storage.open_range(asset.storage_key))
    assert len(data) == asset.size_bytes
    return asset


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def nats_url() -> str:
    problem = nats_problem(NATS_TEST_URL)
    if problem:
        _skip_or_fail(problem, REQUIRE_NATS)
    return NATS_TEST_URL


@pytest.fixture(scope="module")
def private_redis(redis_url, tmp_path_factory):
    """Redis is here (the `redis_url` fixture said so); the tests get a server of their own,
    which they may flush and restart."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    if server.binary is None:
        _skip_or_fail("redis-server is not installed (a private one is restarted here)", REQUIRE_REDIS)
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def migrated_database(postgres, tmp_path_factory) -> str:
    url = postgres.create()
    flask(base_env(url, tmp_path_factory.mktemp("migrate")), "db", "upgrade")
    return url


@pytest.fixture(scope="module")
def sender(migrated_database, private_redis, tmp_path_factory):
    """The web process's side: makes job rows and sends them through Celery to Redis."""
    app = make_app(migrated_database, tmp_path_factory, REDIS_URL=private_redis.url, **JOB_TIMINGS)
    yield app
    celery_for(app).close()


@pytest.fixture
def deployment(sender, migrated_database, private_redis, nats_url, tmp_path):
    private_redis.client().flushall()
    env = base_env(migrated_database, tmp_path / "instance", REDIS_URL=private_redis.url,
                   NATS_URL=nats_url, **JOB_TIMINGS)
    (tmp_path / "logs").mkdir()
    running = Deployment(env, tmp_path / "instance", tmp_path / "logs")
    yield running
    running.stop_all()
    with sender.app_context():
        with db.engine.begin() as connection:
            for table in ("usage_events", "asset_jobs", "assets"):
                connection.execute(text(f"DELETE FROM {table}"))
        db.session.remove()


@pytest.fixture
def nats_events(nats_url):
    with EventLog(nats_url) as log:
        yield log


# --------------------------------------------------------------------------- tests


def test_every_category_is_made_once_stored_and_announced(sender, deployment, nats_events):
    worker = deployment.wait_ready(deployment.start_worker(concurrency=2))
    job_ids = {category: send_job(sender, category=category) for category in FORMATS}
    for category, job_id in job_ids.items():
        job = wait_for_status(sender, job_id, "succeeded", timeout=30)
        assert (job.attempts, job.progress, job.lease_owner) == (1, 100, None), category
        asset = assert_stored_once(sender, deployment, job)
        assert asset.format == FORMATS[category]
        assert deployment.storage().path_for(asset.storage_key).is_file()
    assert nats_events.settled_counts(job_ids.values(), events.COMPLETED) == [1] * len(FORMATS)
    for job_id in job_ids.values():
        subjects = nats_events.subjects(job_id)
        assert subjects[0] == events.STARTED and subjects[-1] == events.COMPLETED
    assert len(deployment.stored_files()) == len(FORMATS)
    assert "Traceback" not in worker.log()


def test_a_pool_child_killed_mid_job_is_finished_once_by_another_attempt(sender, deployment, nats_events):
    worker = deployment.wait_ready(deployment.start_worker(concurrency=2, ASSET_BUILTIN_LATENCY_MS="3000"))
    job_id = send_job(sender, category="texture")
    running = wait_until_generating(sender, job_id)
    child = pid_of_lease_owner(running.lease_owner)
    assert child in worker.pool_children(), (running.lease_owner, worker.pool_children())
    assert worker.hostname in running.lease_owner
    os.kill(child, signal.SIGKILL)

    job = wait_for_status(sender, job_id, "succeeded", timeout=40)
    assert job.attempts == 2
    assert not is_alive(child)
    assert_stored_once(sender, deployment, job)
    assert len(deployment.stored_files()) == 1
    assert nats_events.settled_count(job_id, events.COMPLETED) == 1
    assert nats_events.count(job_id, events.STARTED) == 2
    assert worker.process.poll() is None  # the worker itself lived on
    log = worker.log()
    assert re.search(rf"pid:{child} exited with 'signal 9 \(SIGKILL\)'", log), log
    print_recovery(worker, job_id)


def test_a_killed_worker_s_job_is_taken_over_by_another_worker(sender, deployment, nats_events):
    first = deployment.wait_ready(deployment.start_worker(concurrency=1, ASSET_BUILTIN_LATENCY_MS="2000"))
    job_id = send_job(sender, category="audio")
    running = wait_until_generating(sender, job_id)
    assert first.hostname in running.lease_owner
    first.kill()  # main process and pool child at once, as a lost machine would
    assert job_row(sender, job_id).status == "running"

    second = deployment.wait_ready(deployment.start_worker(concurrency=1, ASSET_BUILTIN_LATENCY_MS="2000"))
    job = wait_for_status(sender, job_id, "succeeded", timeout=40)
    assert job.attempts == 2
    assert_stored_once(sender, deployment, job)
    assert nats_events.settled_count(job_id, events.COMPLETED) == 1
    assert f"sweeper: sending job {job_id} again" in second.log()


def test_jobs_queued_in_a_redis_that_restarted_empty_are_sent_again(sender, deployment, private_redis,
                                                                    nats_events):
    job_ids = [send_job(sender, category="image") for _ in range(5)]
    assert private_redis.client().llen("celery") == 5
    private_redis.kill()
    private_redis.start()
    assert private_redis.client().llen("celery") == 0  # no persistence: the queue is gone

    worker = deployment.wait_ready(deployment.start_worker(concurrency=2))
    for job_id in job_ids:
        job = wait_for_status(sender, job_id, "succeeded", timeout=40)
        assert job.attempts == 1
        assert_stored_once(sender, deployment, job)
    assert nats_events.settled_counts(job_ids, events.COMPLETED) == [1] * len(job_ids)
    for job_id in job_ids:
        assert f"sweeper: sending job {job_id} again" in worker.log()


def test_a_job_that_always_fails_stops_after_its_attempts(sender, deployment, nats_events):
    with FakeOpenAIImages() as provider:
        provider.fault = Fault(status=503)
        deployment.wait_ready(deployment.start_worker(
            concurrency=2, OPENAI_IMAGES_API_KEY=provider.api_key, OPENAI_IMAGES_BASE_URL=f"{provider.url}/v1"))
        job_id = send_job(sender, category="image", provider="openai")
        job = wait_for_status(sender, job_id, "failed", timeout=30)
        assert nats_events.settled_count(job_id, events.FAILED) == 1
        time.sleep(1.0)  # a fourth attempt would be on its way by now (retry delay 0.2 s, 0.4 s)
        generations = [r for r in provider.api_requests()
                       if (r["method"], r["path"]) == ("POST", "/v1/images/generations")]
    assert (job.attempts, job.max_attempts, job.error_kind) == (3, 3, "unavailable")
    assert job.error.startswith("openai answered 503"), job.error
    assert len(generations) == 3
    assert job_row(sender, job_id).status == "failed"
    assert asset_row(sender, job.asset_id).status == "failed"
    failed = [payload for subject, payload in nats_events.of(job_id) if subject == events.FAILED]
    assert (failed[0]["attempts"], failed[0]["error_kind"], failed[0]["error"]) == (3, "unavailable", job.error)
    assert nats_events.count(job_id, events.STARTED) == 3
    assert nats_events.count(job_id, events.COMPLETED) == 0


def test_a_provider_slower_than_the_lease_is_waited_for_not_asked_twice(sender, deployment, nats_events):
    """Between "asking OpenAI" and its answer the generator reports nothing: only the lease's
    heartbeat keeps the job its runner's while the provider takes longer than the lease."""
    with FakeOpenAIImages() as provider:
        provider.fault = Fault(delay=1.5 * LEASE_SECONDS)
        deployment.wait_ready(deployment.start_worker(
            concurrency=2, OPENAI_IMAGES_API_KEY=provider.api_key, OPENAI_IMAGES_BASE_URL=f"{provider.url}/v1"))
        job_id = send_job(sender, category="image", provider="openai")
        job = wait_for("the job to end, or to be taken from its live runner",
                       lambda: ended_or_retried(sender, job_id), timeout=30)
        generations = [r for r in provider.api_requests()
                       if (r["method"], r["path"]) == ("POST", "/v1/images/generations")]
    assert (job.status, job.attempts) == ("succeeded", 1), (job.status, job.attempts, job.lease_owner)
    assert len(generations) == 1
    assert nats_events.settled_count(job_id, events.COMPLETED) == 1


def test_flower_shows_the_job_s_task(sender, deployment):
    port, credentials = free_port(), f"ops:{uuid.uuid4().hex}"
    worker = deployment.start_worker(concurrency=1)
    flower = deployment.start_flower(port, credentials)
    deployment.wait_ready(worker)
    base = f"http://127.0.0.1:{port}"
    auth = tuple(credentials.split(":", 1))
    online = f'flower_worker_online{{worker="{worker.hostname}"}} 1.0'
    wait_for("Flower to hear the worker's events", lambda: flower_says(base + "/metrics", online, flower), 30)

    job_id = send_job(sender, category="model3d")
    wait_for_status(sender, job_id, "succeeded", timeout=30)
    task = wait_for("Flower to show the task as SUCCESS",
                    lambda: flower_task(base, auth, job_id, "SUCCESS"), timeout=20, interval=0.3)
    assert task["name"] == "gaia.assets.generate"
    assert task["worker"] == worker.hostname
    assert requests.get(base + "/api/tasks", timeout=5, proxies=NO_PROXY).status_code == 401


def flower_says(url: str, line: str, flower: Process) -> bool:
    if flower.process.poll() is not None:
        raise AssertionError(f"Flower exited early:\n{flower.log()}")
    try:
        return line in requests.get(url, timeout=2, proxies=NO_PROXY).text
    except requests.RequestException:
        return False


def flower_task(base: str, auth, job_id, state: str) -> dict | None:
    answer = requests.get(base + "/api/tasks", params={"taskname": "gaia.assets.generate"},
                          auth=auth, timeout=5, proxies=NO_PROXY)
    assert answer.status_code == 200, answer.text
    for task in answer.json().values():
        if str(job_id) in str(task.get("args")) and task.get("state") == state:
            return task
    return None


def print_recovery(worker: Process, job_id) -> None:
    """What the worker's log says about how the job got its second attempt (shown with -s)."""
    wanted = re.compile(rf"{job_id}|WorkerLostError|exited with|gaia\.assets\.generate\[")
    lines = [line for line in worker.log().splitlines() if wanted.search(line)]
    print("\n".join(lines))
