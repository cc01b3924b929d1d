"""Asset jobs: what enqueueing one costs the web server, and how many a Celery worker finishes.

Run from the repository root with the project's virtualenv (see bench/README.md, "Assets"):

    .venv/bin/python bench/bench_assets.py                       # ~3 min: 3 rounds x 5 s, 200 jobs
    .venv/bin/python bench/bench_assets.py --rounds 5 --jobs 400 --workers 1,2,3

What it starts: a fresh PostgreSQL database gaia_bench_<random> (migrated with `flask db
upgrade`, an admin key from `flask create-admin`, dropped at the end), Gaia (`wsgi:app`) under
`python -m gunicorn -c gunicorn.conf.py` from the repository root with a clean environment
(common.py's `Server`): REDIS_URL set, so gunicorn.conf.py's defaults with Redis
apply (gevent workers, 2 of them; --web-workers), RATE_LIMIT_DEFAULT raised out of the way (the
limiter still runs), a temporary GAIA_INSTANCE_PATH (asset files in its `assets/` folder), and
no NATS_URL (events go to the log). Redis is a private redis-server on a free port (no
persistence; stopped at the end), so that nobody else's worker on the shared Redis can take the
bench's messages; or, with --redis-url, one database number of a running Redis, which must be
empty at the start and is emptied (FLUSHDB of that number only) at the end. Celery workers: `python -m celery -A celery_worker worker --pool prefork
--concurrency 1 --without-gossip --without-mingle`, with Gaia's environment and
OPENBLAS_NUM_THREADS=1.

What it measures, in one run:
  1. enqueue: `POST /api/v0.2/assets/generate` (a built-in 512x512 image) and an authenticated
     `GET /api/v0.2/models` on the same server, in alternating rounds (the order reversed every
     other round) at each concurrency (--concurrency 1,8), with bench/loadgen.py in this
     process on keep-alive connections. No Celery worker runs meanwhile: after each enqueue
     round the runner checks that every 202 left one job row and one queued message, then
     purges the queue and deletes the rows, so each round starts from empty tables. Per
     target: median req/s, p50, p99, and CPU per request of the gunicorn processes (master +
     workers), of the PostgreSQL backends of the bench database and of redis-server (/proc).
  2. end to end: for each count of Celery worker processes (--workers 1,2; each a worker
     with --concurrency 1), start them, warm them with a few jobs, then enqueue --jobs jobs
     through the API and time from the first request until every job row is `succeeded`
     (polled in the database), and check what the jobs wrote: job rows succeeded with
     progress 100, assets ready, files on disk, usage_events of kind `asset.generate` (after
     the batch flush), and the started/progress/completed events in the workers' logs.
  3. profile: --profile-jobs jobs run by `run_job` in one child process (no Celery, no
     gunicorn, OPENBLAS_NUM_THREADS=1): half timed part by part with small wrappers (wall and
     CPU), half under cProfile (which inflates call-heavy SQLAlchemy code against numpy and
     zlib, so both are shown); the time of a job split into its parts (claim, picture, PNG
     encode, progress updates, storage write, finish, events), and SQL statements per job.

It prints the tables and the verdicts against the targets (CPU per enqueue within 2x that of
GET /models; enqueue p99 under 20 ms at c=8; at least 20 jobs/s per worker process) and
writes JSON under bench/results/ (git-ignored). Exit status: 0 when no request failed and every
job succeeded, 2 otherwise, 1 on a failure, 130 when interrupted. Everything it starts is
stopped on exit, on failure and on Ctrl-C/SIGTERM. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402  (Gaia runtime dependencies)
import redis  # noqa: E402

from bench.bench_chat import PgBackends  # noqa: E402
from bench.bench_models_auth import Round, Summary, compare_summaries  # noqa: E402
from bench.common import (  # noqa: E402
    BENCH_RATE_LIMIT,
    DEFAULT_PG_URL,
    BenchDatabase,
    Interrupted,
    Server,
    _children,
    _cpu_seconds,
    _loopback_url,
    _machine_jiffies,
    background_cores,
    clean_environment,
    free_port,
    gaia_environment,
    git_revision,
    install_signal_handlers,
    interrupted,
    log,
    migrate_and_key,
    redis_server_pids,
    remove_workdir,
    results_path,
    write_results,
)
from bench.loadgen import LoadResult, percentile, run_load  # noqa: E402

API = "/api/v0.2"
MODELS_PATH = f"{API}/models"
GENERATE_PATH = f"{API}/assets/generate"
# No composition or colour word: the seed (random per job) picks one of the four compositions
# (landscape, planet, portrait, abstract) and the palette, so the jobs are a mix.
DEFAULT_DESCRIPTION = "a castle in the mist"
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1"}  # numpy's BLAS threads slowed generation under load
POLL_INTERVAL = 0.05

# The targets.
TARGET_CPU_RATIO = 2.0  # CPU per enqueue within 2x that of the authenticated GET /models
TARGET_P99_MS = 20.0  # enqueue p99 at c=8
TARGET_P99_CONCURRENCY = 8
TARGET_JOBS_PER_WORKER = 20.0  # jobs/s per worker process


def generate_body(description: str) -> bytes:
    return json.dumps({"category": "image", "description": description,
                       "options": {"width": 512, "height": 512}}).encode()


# --------------------------------------------------------------------------------------------
# Redis and the job tables


class QueueRedis:
    """The Redis the bench's Gaia and workers use, holding the Celery queue (a list named
    `celery`, and its priority variants). By default a redis-server of the bench's own on a
    free port (no persistence), so that no other user of the shared Redis can take its
    messages or be touched by it; with --redis-url, a database number of the shared one,
    which must be empty at the start and is emptied (FLUSHDB of that number only) at the end."""

    def __init__(self, url: str, process: subprocess.Popen | None = None) -> None:
        self.url = url
        self.process = process
        self.client = redis.Redis.from_url(url, socket_connect_timeout=3)
        self.owned = False  # set once it was found empty: only then is it flushed at the end

    @classmethod
    def private(cls, folder: Path) -> QueueRedis:
        port = free_port()
        with open(folder / "redis.log", "wb") as handle:
            process = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(folder)],
                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        queue = cls(f"redis://127.0.0.1:{port}/0", process)
        deadline = time.monotonic() + 10
        while True:
            try:
                queue.client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}") from None
                time.sleep(0.05)
        log(f"started a private redis-server on port {port}, pid {process.pid}")
        return queue

    def claim(self) -> None:
        keys = self.client.dbsize()
        if keys:
            raise RuntimeError(f"Redis {self.url} holds {keys} keys: not this bench's own "
                               "database; pass --redis-url with an unused database number")
        self.owned = True

    def pids(self) -> list[int]:
        """The redis-server processes whose CPU a round is charged with."""
        return [self.process.pid] if self.process else redis_server_pids()

    def _queues(self) -> list[bytes]:
        return [key for key in self.client.scan_iter(match="celery*")
                if self.client.type(key) == b"list"]

    def queued(self) -> int:
        return sum(self.client.llen(key) for key in self._queues())

    def purge(self) -> int:
        """Drop every queued message; how many there were."""
        removed = self.queued()
        for key in self._queues():
            self.client.delete(key)
        return removed

    def close(self) -> None:
        if self.process is None and self.owned:
            self.client.flushdb()  # this database number only
            log(f"emptied Redis {self.url}")
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
            log("stopped the private redis-server")


class JobTables:
    """Reads and clears the bench database's asset tables (a connection of its own)."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url.replace("postgres://", "postgresql://", 1),
                                    autocommit=True, connect_timeout=5)

    def scalar(self, query: str, params: tuple = ()) -> int:
        return int(self.conn.execute(query, params).fetchone()[0] or 0)

    def jobs(self) -> int:
        return self.scalar("SELECT count(*) FROM asset_jobs")

    def clear(self) -> int:
        """Delete every asset (its job goes with it: ON DELETE CASCADE); jobs deleted."""
        jobs = self.jobs()
        self.conn.execute("DELETE FROM assets")
        return jobs

    def clear_usage(self) -> None:
        self.conn.execute("DELETE FROM usage_events WHERE kind = 'asset.generate'")

    def usage(self) -> int:
        return self.scalar("SELECT count(*) FROM usage_events WHERE kind = 'asset.generate'")

    def progress(self) -> tuple[int, int, int]:
        """(succeeded, failed or cancelled, all) jobs."""
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'),"
            " count(*) FILTER (WHERE status IN ('failed', 'cancelled')), count(*) FROM asset_jobs"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def job_ids(self) -> set[str]:
        return {str(row[0]) for row in self.conn.execute("SELECT id FROM asset_jobs")}

    def written(self) -> dict:
        """What the finished jobs wrote, counted."""
        row = self.conn.execute(
            "SELECT count(*) FILTER (WHERE j.status = 'succeeded'),"
            " count(*) FILTER (WHERE j.progress = 100),"
            " count(*) FILTER (WHERE j.attempts = 1),"
            " count(*) FILTER (WHERE a.status = 'ready' AND a.storage_key IS NOT NULL),"
            " extract(epoch FROM max(j.finished_at) - min(j.created_at)),"
            " avg(a.size_bytes)"
            " FROM asset_jobs j JOIN assets a ON a.id = j.asset_id"
        ).fetchone()
        keys = [r[0] for r in
                self.conn.execute("SELECT storage_key FROM assets WHERE storage_key IS NOT NULL")]
        return {"succeeded": int(row[0]), "progress_100": int(row[1]), "one_attempt": int(row[2]),
                "assets_ready": int(row[3]), "db_span_s": float(row[4] or 0.0),
                "mean_file_bytes": float(row[5] or 0.0), "storage_keys": keys}

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------
# Celery workers


@dataclass
class CeleryWorker:
    """One `celery worker` (prefork, --concurrency 1): a master and its pool child."""

    name: str
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "celery_worker", "worker", "--pool", "prefork",
                 "--concurrency", "1", "--without-gossip", "--without-mingle", "--loglevel", "INFO",
                 "--hostname", f"{self.name}@%h"],
                cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches the pool
            )
        log(f"started Celery worker {self.name}, pid {self.proc.pid}")

    def text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if re.search(r"\bready\.\s*$", self.text(), re.MULTILINE):
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU used so far by (the master, its pool children)."""
        if not self.proc:
            return 0.0, 0.0
        return _cpu_seconds(self.proc.pid), sum(_cpu_seconds(p) for p in _children(self.proc.pid))

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown of the group it leads
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        log(f"stopped Celery worker {self.name} (exit {self.proc.returncode})")


_TASK_DONE = re.compile(r"Task gaia\.assets\.generate\[([0-9a-f-]+)\] succeeded in ([0-9.]+)s")
_EVENT = re.compile(r"(asset\.generation\.\w+) (\{.*\})\s*$", re.MULTILINE)


def task_times(text: str) -> list[float]:
    """Seconds per task, as the worker logged them ("succeeded in ...")."""
    return [float(m.group(2)) for m in _TASK_DONE.finditer(text)]


def events_of(text: str, job_ids: set[str]) -> dict[str, dict[str, int]]:
    """{subject: {job_id: count}} of the log publisher's lines about `job_ids`."""
    found: dict[str, dict[str, int]] = {}
    for match in _EVENT.finditer(text):
        try:
            job_id = json.loads(match.group(2)).get("job_id")
        except json.JSONDecodeError:
            continue
        if job_id in job_ids:
            per_job = found.setdefault(match.group(1), {})
            per_job[job_id] = per_job.get(job_id, 0) + 1
    return found


# --------------------------------------------------------------------------------------------
# Part 1: enqueue against GET /models


@dataclass(frozen=True)
class Target:
    name: str
    method: str
    path: str
    expect_status: int
    body: bytes = b""


@dataclass
class AssetRound(Round):
    pg_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    jobs_made: int = 0  # job rows after an enqueue round
    messages: int = 0  # messages in the queue after it

    @property
    def other_cores(self) -> float:
        elapsed = self.result.elapsed_s or float("nan")
        spent = self.server_cpu_s + self.result.client_cpu_s + self.pg_cpu_s + self.redis_cpu_s
        return max(0.0, self.machine_busy * (os.cpu_count() or 1) - spent / elapsed)

    def row(self) -> dict:
        data = super().row()
        data.update(pg_cpu_s=self.pg_cpu_s, redis_cpu_s=self.redis_cpu_s,
                    jobs_made=self.jobs_made, messages=self.messages)
        return data


@dataclass
class Meters:
    """What a round is charged with: the web server, PostgreSQL and Redis."""

    server: Server
    pg: PgBackends
    redis_pids: list[int]

    def read(self) -> tuple:
        return (_machine_jiffies(), self.server.cpu_seconds(), self.pg.snapshot(),
                sum(_cpu_seconds(p) for p in self.redis_pids))

    @staticmethod
    def spent(before: tuple, after: tuple) -> dict:
        (busy0, total0), (busy1, total1) = before[0], after[0]
        live, exited, _ = PgBackends.spent(before[2], after[2])
        return {"busy": (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan"),
                "server": after[1] - before[1], "pg": live + exited, "redis": after[3] - before[3]}


def load(server: Server, target: Target, headers: dict, concurrency: int, *,
         duration: float | None = None, requests: int | None = None) -> LoadResult:
    return run_load(server.base_url + target.path, concurrency=concurrency, duration=duration,
                    requests=requests, headers=headers, method=target.method, body=target.body,
                    expect_status=target.expect_status)


def measure(meters: Meters, target: Target, headers: dict, concurrency: int, duration: float,
            index: int) -> AssetRound:
    before = meters.read()
    result = load(meters.server, target, headers, concurrency, duration=duration)
    spent = Meters.spent(before, meters.read())
    return AssetRound(target.name, concurrency, index, result, spent["server"], spent["busy"],
                      pg_cpu_s=spent["pg"], redis_cpu_s=spent["redis"])


def settle_enqueue_round(r: AssetRound, tables: JobTables, queue: QueueRedis) -> None:
    """Check that every 202 left a row and a message; then empty both."""
    r.jobs_made, r.messages = tables.jobs(), queue.purge()
    tables.clear()
    if r.jobs_made != r.result.ok or r.messages != r.result.ok:
        log(f"WARNING: {r.result.ok} answers 202 but {r.jobs_made} job rows and {r.messages} "
            "queued messages")


def enqueue_rounds(meters: Meters, targets: list[Target], headers: dict, concurrencies: list[int],
                   rounds: int, duration: float, tables: JobTables, queue: QueueRedis
                   ) -> tuple[dict[tuple[str, int], Summary], list[AssetRound]]:
    summaries: dict[tuple[str, int], Summary] = {}
    all_rounds: list[AssetRound] = []
    for c in concurrencies:
        for target in targets:
            summaries[(target.name, c)] = Summary(target.name, c)
        for index in range(1, rounds + 1):
            order = targets if index % 2 else targets[::-1]
            for target in order:
                r = measure(meters, target, headers[target.name], c, duration, index)
                if target.method == "POST":
                    settle_enqueue_round(r, tables, queue)
                summaries[(target.name, c)].rounds.append(r)
                all_rounds.append(r)
                log(f"c={c} round {index} {target.name}: {r.result.rps:.0f} req/s, p50 "
                    f"{r.result.p50_ms:.2f} p99 {r.result.p99_ms:.2f} ms, server "
                    f"{r.server_cpu_s / max(r.result.ok, 1) * 1e6:.0f} µs/req"
                    + (f", errors {r.result.errors} {r.result.error_kinds}" if r.result.errors else ""))
    return summaries, all_rounds


def per_request_us(summary: Summary, attribute: str) -> float:
    ok = summary.ok
    return sum(getattr(r, attribute) for r in summary.rounds) / ok * 1e6 if ok else float("nan")


# --------------------------------------------------------------------------------------------
# Part 2: end to end with Celery workers


def wait_jobs_done(tables: JobTables, expected: int, timeout: float) -> tuple[float, tuple]:
    """Poll until `expected` jobs are finished (succeeded or not); (when, last counts)."""
    deadline = time.perf_counter() + timeout
    counts = tables.progress()
    while counts[0] + counts[1] < expected and time.perf_counter() < deadline:
        time.sleep(POLL_INTERVAL)
        counts = tables.progress()
    return time.perf_counter(), counts


def wait_usage(tables: JobTables, expected: int, timeout: float = 15.0) -> int:
    """usage_events are written by each worker's batcher (USAGE_FLUSH_INTERVAL, 1 s)."""
    deadline = time.monotonic() + timeout
    found = tables.usage()
    while found < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        found = tables.usage()
    return found


def worker_cpu(workers: list[CeleryWorker]) -> tuple[float, float]:
    """CPU so far of the workers' masters (consumers) and of their pool children (tasks)."""
    split = [worker.cpu_seconds() for worker in workers]
    return sum(m for m, _ in split), sum(p for _, p in split)


def start_workers(count: int, env: dict[str, str], logs: Path, tag: str) -> list[CeleryWorker]:
    workers = [CeleryWorker(f"bench-{tag}-{i + 1}", env, logs / f"celery-{tag}-{i + 1}.log")
               for i in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_ready()
    return workers


def warm_workers(server: Server, target: Target, headers: dict, workers: list[CeleryWorker],
                 tables: JobTables) -> None:
    """A few jobs per worker (numpy, Pillow and the generator load with the first file), then
    the tables and the usage rows are emptied again."""
    n = 3 * len(workers)
    result = load(server, target, headers, min(n, 8), requests=n)
    _, counts = wait_jobs_done(tables, n, timeout=60.0)
    if result.errors or counts[0] != n:
        raise RuntimeError(f"warm-up jobs: {result.summary()}; jobs (succeeded, failed, all) {counts}")
    time.sleep(1.5)  # the workers' usage batchers flush once a second
    tables.clear()
    tables.clear_usage()


def check_written(tables: JobTables, workers: list[CeleryWorker], offsets: list[int],
                  storage_root: Path, jobs: int) -> dict:
    """What the jobs of the batch left behind: rows, files, usage rows and logged events."""
    written = tables.written()
    keys = written.pop("storage_keys")
    written["files_on_disk"] = sum((storage_root / k[0:2] / k[2:4] / k).is_file() for k in keys)
    written["usage_events"] = wait_usage(tables, jobs)
    ids = tables.job_ids()
    texts = [worker.text()[offset:] for worker, offset in zip(workers, offsets)]
    events = events_of("\n".join(texts), ids)
    written["events"] = {subject.rsplit(".", 1)[1]: {"lines": sum(per_job.values()),
                                                      "jobs": len(per_job)}
                         for subject, per_job in sorted(events.items())}
    per_worker = [task_times(text) for text in texts]
    written["tasks_per_worker"] = [len(times) for times in per_worker]
    all_times = sorted(t * 1000 for times in per_worker for t in times)
    written["task_ms_p50"] = percentile(all_times, 50)
    written["task_ms_mean"] = sum(all_times) / len(all_times) if all_times else float("nan")
    written["task_ms_p99"] = percentile(all_times, 99)
    return written


def end_to_end(count: int, server: Server, target: Target, headers: dict, tables: JobTables,
               queue: QueueRedis, pg: PgBackends, env: dict, logs: Path, storage_root: Path,
               jobs: int, concurrency: int) -> dict:
    tables.clear()
    tables.clear_usage()
    queue.purge()
    workers = start_workers(count, env, logs, f"w{count}")
    try:
        warm_workers(server, target, headers, workers, tables)
        offsets = [len(worker.text()) for worker in workers]
        meters = Meters(server, pg, queue.pids())
        before, masters0, pools0 = meters.read(), *worker_cpu(workers)
        started = time.perf_counter()
        result = load(server, target, headers, concurrency, requests=jobs)
        enqueued = time.perf_counter()
        done, counts = wait_jobs_done(tables, result.ok, timeout=max(60.0, jobs * 0.5))
        spent = Meters.spent(before, meters.read())
        masters1, pools1 = worker_cpu(workers)
        spent.update(workers=masters1 + pools1 - masters0 - pools0, worker_masters=masters1 - masters0)
        written = check_written(tables, workers, offsets, storage_root, result.ok)
    finally:
        for worker in workers:
            worker.stop()
    elapsed = done - started
    run = {"workers": count, "jobs": jobs, "enqueue": result.to_dict(), "enqueue_s": enqueued - started,
           "elapsed_s": elapsed, "succeeded": counts[0], "failed": counts[1],
           "jobs_per_s": counts[0] / elapsed if elapsed else float("nan"),
           "cpu_ms_per_job": {k: v / max(counts[0], 1) * 1000 for k, v in spent.items() if k != "busy"},
           "machine_busy": spent["busy"], **written}
    run["jobs_per_s_per_worker"] = run["jobs_per_s"] / count
    accounted = (sum(v for k, v in spent.items() if k not in ("busy", "worker_masters"))
                 + result.client_cpu_s)
    run["other_cores"] = max(0.0, spent["busy"] * (os.cpu_count() or 1) - accounted / elapsed)
    run["db_jobs_per_s"] = counts[0] / written["db_span_s"] if written["db_span_s"] else float("nan")
    log(f"{count} worker(s): {counts[0]}/{jobs} succeeded in {elapsed:.2f} s = "
        f"{run['jobs_per_s']:.1f} jobs/s ({run['jobs_per_s_per_worker']:.1f} per worker process)")
    tables.clear()
    queue.purge()
    return run


# --------------------------------------------------------------------------------------------
# Part 3: where a job's time goes (a child process)

RUNNER = "gaia_app/jobs/runner.py"
RASTER = "gaia_app/generators/procedural_raster.py"
# label -> (the file a function is in, its name): what the split below is made of.
_FUNCTIONS = {
    "run_job": (RUNNER, "run_job"),
    "attempt": (RUNNER, "run"),
    "generate": ("gaia_app/generators/builtin.py", "generate"),
    "render": (RASTER, "render"),
    "encode_png": (RASTER, "encode_png"),
    "progress": (RUNNER, "_progress"),
    "renew": (RUNNER, "_renew"),
    "publish": (RUNNER, "_publish"),
    "storage_put": ("gaia_app/storage/local.py", "put"),
    "fsync": ("~", "<built-in method posix.fsync>"),
    "succeeded": (RUNNER, "_succeeded"),
    "usage": (RUNNER, "_record_usage"),
}


def job_parts(ms) -> dict[str, float]:
    """A job's time split into parts that add up to run_job (rows starting with two spaces
    are shares of the row above). `ms(label, caller=None)`: ms per job of a function
    (inclusive), or of its calls from `caller` only."""
    parts = {
        "claim the job and read its row (UPDATE, commit, SELECT)": ms("run_job") - ms("attempt"),
        "picture: plan and paint (numpy)": ms("generate") - ms("encode_png") - ms("progress"),
        "  of which render() (painting, strip by strip)": ms("render"),
        "PNG encode (Pillow, compress_level 1)": ms("encode_png"),
        "progress: 3 UPDATEs, each its own transaction": ms("renew", "progress"),
        "progress events (log publisher)": ms("publish", "progress"),
        "storage write (sha256, write, fsync file and folder)": ms("storage_put"),
        "  of which fsync": ms("fsync"),
        "finish: UPDATE job, UPDATE asset, commit": (ms("succeeded") - ms("publish", "succeeded")
                                                     - ms("usage")),
        "started + completed events (log publisher)": ms("publish", "attempt") + ms("publish", "succeeded"),
        "usage event (queued in memory)": ms("usage"),
    }
    counted = sum(v for k, v in parts.items() if not k.startswith("  "))
    parts["rest (heartbeat thread, Attempt setup, progress bookkeeping)"] = ms("run_job") - counted
    return parts


class PartTimer:
    """Wall and CPU (this thread's) time of the functions of `_FUNCTIONS`, each keyed by the
    innermost of them that called it. A wrapper costs a few µs, where cProfile adds a cost to
    every call and so inflates call-heavy code (SQLAlchemy) against numpy and zlib."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str | None], list[float]] = {}
        self.local = threading.local()
        self.patched: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, label: str) -> None:
        original = owner.__dict__[name]
        totals, local = self.totals, self.local

        def timed(*args, **kwargs):
            stack = local.__dict__.setdefault("stack", [])
            key = (label, stack[-1] if stack else None)
            stack.append(label)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent = totals.setdefault(key, [0.0, 0.0])
                spent[0] += time.perf_counter() - wall
                spent[1] += time.thread_time() - cpu
                stack.pop()

        self.patched.append((owner, name, original))
        setattr(owner, name, timed)

    def install(self) -> None:
        from gaia_app.generators import builtin, procedural_image
        from gaia_app.jobs import runner
        from gaia_app.storage.local import LocalAssetStorage

        owners = {"run_job": runner, "attempt": runner.Attempt, "generate": builtin.BuiltinGenerator,
                  "render": procedural_image, "encode_png": procedural_image,
                  "storage_put": LocalAssetStorage, "fsync": os}
        for label, (_, name) in _FUNCTIONS.items():
            self.wrap(owners.get(label, runner.Attempt), "fsync" if label == "fsync" else name, label)

    def uninstall(self) -> None:
        while self.patched:
            owner, name, original = self.patched.pop()
            setattr(owner, name, original)

    def ms(self, jobs: int, which: int):
        def get(label: str, caller: str | None = None) -> float:
            return sum(v[which] for (l, c), v in self.totals.items()
                       if l == label and (caller is None or c == caller)) / jobs * 1000
        return get


def _stat(stats, label: str, caller: str | None = None) -> tuple[float, int]:
    """(cumulative seconds, calls) of a function of `_FUNCTIONS`, or of its calls from `caller`."""
    where, name = _FUNCTIONS[label]
    seconds, calls = 0.0, 0
    for (filename, _line, func), (_cc, nc, _tt, ct, callers) in stats.stats.items():
        if func != name or not filename.endswith(where):
            continue
        if caller is None:
            seconds, calls = seconds + ct, calls + nc
            continue
        caller_where, caller_name = _FUNCTIONS[caller]
        for (caller_file, _cl, caller_func), values in callers.items():
            if caller_func == caller_name and caller_file.endswith(caller_where):
                seconds, calls = seconds + values[3], calls + values[0]
    return seconds, calls


def sql_counts(stats, jobs: int) -> dict:
    """Statements and commits per job, and the time spent in them (psycopg's execute, commit)."""
    found = {}
    for key, where, name in (("execute", "psycopg/cursor.py", "execute"),
                             ("commit", "psycopg/connection.py", "commit")):
        entries = [v for (f, _l, n), v in stats.stats.items() if n == name and f.endswith(where)]
        found[key] = (sum(v[3] for v in entries), sum(v[1] for v in entries))
    return {"statements_per_job": found["execute"][1] / jobs, "commits_per_job": found["commit"][1] / jobs,
            "sql_ms_per_job": (found["execute"][0] + found["commit"][0]) / jobs * 1000}


def profile_child() -> int:
    """Runs in a child with Gaia's environment; BENCH_PROFILE_SPEC is JSON {"jobs": [ids]}.
    3 jobs warm up; half of the rest run with the timers, the other half under cProfile."""
    import cProfile
    import io
    import pstats

    from gaia_app.extensions import db
    from gaia_app.jobs import runner
    from gaia_app.jobs.dispatch import runner_identity
    from wsgi import app

    ids = json.loads(os.environ["BENCH_PROFILE_SPEC"])["jobs"]
    timed, profiled = ids[3:3 + (len(ids) - 3) // 2], ids[3 + (len(ids) - 3) // 2:]

    def run(job_id: str) -> None:
        with app.app_context():
            try:
                outcome = runner.run_job(job_id, runner_identity("bench"))
            finally:
                db.session.remove()
        if outcome.status != "succeeded":
            raise RuntimeError(f"job {job_id}: {outcome}")

    for job_id in ids[:3]:
        run(job_id)
    timer = PartTimer()
    timer.install()
    for job_id in timed:
        run(job_id)
    timer.uninstall()
    profiler = cProfile.Profile()
    for job_id in profiled:
        profiler.runcall(run, job_id)
    stats = pstats.Stats(profiler)
    top = io.StringIO()
    pstats.Stats(profiler, stream=top).strip_dirs().sort_stats("cumulative").print_stats(30)
    n = len(profiled)
    parts = {"wall_ms": job_parts(timer.ms(len(timed), 0)), "cpu_ms": job_parts(timer.ms(len(timed), 1)),
             "cprofile_ms": job_parts(lambda label, caller=None: _stat(stats, label, caller)[0] / n * 1000)}
    print(json.dumps({"timed_jobs": len(timed), "profiled_jobs": n, "parts": parts,
                      **sql_counts(stats, n), "top_cumulative": top.getvalue()}))
    return 0


def run_profile(server: Server, target: Target, headers: dict, tables: JobTables,
                queue: QueueRedis, env: dict, jobs: int, logs: Path) -> dict:
    """Enqueue `jobs` through the API (no worker runs), then run them in a child process."""
    tables.clear()
    result = load(server, target, headers, 4, requests=jobs)
    if result.errors:
        raise RuntimeError(f"enqueueing the profile's jobs: {result.summary()}")
    queue.purge()  # the child runs the rows; nothing is to consume the messages
    ids = sorted(tables.job_ids())
    child_env = dict(env, **WORKER_ENV, BENCH_PROFILE_SPEC=json.dumps({"jobs": ids}))
    with open(logs / "profile-child.log", "wb") as stderr:
        completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--profile-child"],
                                   cwd=ROOT, env=child_env, stdout=subprocess.PIPE, stderr=stderr,
                                   timeout=300)
    if completed.returncode != 0:
        raise RuntimeError(f"profile child failed; see {logs / 'profile-child.log'}")
    tables.clear()
    return json.loads(completed.stdout.decode().strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Report


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def render_enqueue(summaries: dict, targets: list[Target], concurrencies: list[int]) -> str:
    lines = ["| conc. | target | req/s (median) | p50 ms | p99 ms | server CPU µs/req "
             "| PostgreSQL CPU µs/req | Redis CPU µs/req | errors |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in concurrencies:
        for target in targets:
            s = summaries[(target.name, c)]
            lines.append(
                f"| {c} | {target.name} | {s.median('rps'):.0f} | {s.median('p50_ms'):.2f} "
                f"| {s.median('p99_ms'):.2f} | {s.server_cpu_us_per_request:.0f} "
                f"| {per_request_us(s, 'pg_cpu_s'):.0f} | {per_request_us(s, 'redis_cpu_s'):.0f} "
                f"| {s.errors} |")
    return "\n".join(lines)


def enqueue_verdicts(summaries: dict, concurrencies: list[int]) -> list[dict]:
    out = []
    for c in concurrencies:
        enqueue, models = summaries[("enqueue", c)], summaries[("models", c)]
        ratios = compare_summaries(enqueue, models)
        out.append({"concurrency": c, "cpu_ratio": ratios["cpu"],
                    "cpu_ratio_paired": [ratios["cpu_paired_min"], ratios["cpu_paired_max"]],
                    "rps_ratio": ratios["rps"], "p50_ratio": ratios["p50"],
                    "enqueue_p99_ms": enqueue.median("p99_ms"),
                    "cpu_met": ratios["cpu"] <= TARGET_CPU_RATIO,
                    "p99_met": (enqueue.median("p99_ms") < TARGET_P99_MS
                                if c == TARGET_P99_CONCURRENCY else None)})
    return out


def verdict_text(verdicts: list[dict], runs: list[dict]) -> list[str]:
    lines = []
    for v in verdicts:
        lo, hi = v["cpu_ratio_paired"]
        lines.append(f"c={v['concurrency']}: CPU per enqueue = {_f(v['cpu_ratio'])}x that of GET "
                     f"/models (per round {_f(lo)}-{_f(hi)}) -> "
                     f"{'met' if v['cpu_met'] else 'NOT met'} (target <= {TARGET_CPU_RATIO:g}x)")
        if v["p99_met"] is not None:
            lines.append(f"c={v['concurrency']}: enqueue p99 {_f(v['enqueue_p99_ms'])} ms -> "
                         f"{'met' if v['p99_met'] else 'NOT met'} (target < {TARGET_P99_MS:g} ms)")
    for run in runs:
        rate = run["jobs_per_s_per_worker"]
        lines.append(f"{run['workers']} worker process(es): {_f(run['jobs_per_s'], 1)} jobs/s = "
                     f"{_f(rate, 1)} per worker process -> "
                     f"{'met' if rate >= TARGET_JOBS_PER_WORKER else 'NOT met'} "
                     f"(target >= {TARGET_JOBS_PER_WORKER:g})")
    return lines


def render_rounds(rounds: list[AssetRound]) -> str:
    lines = ["| conc. | round | target | req/s | p50 ms | p99 ms | server µs/req | PostgreSQL µs/req "
             "| Redis µs/req | loadgen µs/req | machine busy | other cores | job rows, messages |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rounds:
        ok = max(r.result.ok, 1)
        made = f"{r.jobs_made}, {r.messages}" if r.target == "enqueue" else "—"
        lines.append(
            f"| {r.concurrency} | {r.index} | {r.target} | {r.result.rps:.0f} | {r.result.p50_ms:.2f} "
            f"| {r.result.p99_ms:.2f} | {r.server_cpu_s / ok * 1e6:.0f} | {r.pg_cpu_s / ok * 1e6:.0f} "
            f"| {r.redis_cpu_s / ok * 1e6:.0f} | {r.result.client_cpu_s / ok * 1e6:.0f} "
            f"| {r.machine_busy * 100:.0f}% | {r.other_cores:.2f} | {made} |")
    return "\n".join(lines)


def render_end_to_end(runs: list[dict]) -> str:
    lines = ["| worker processes | jobs | enqueued in s | all succeeded after s | jobs/s "
             "| per worker process | jobs/s by the rows' timestamps | task ms p50 / mean / p99 (worker log) "
             "| CPU ms/job: workers (of which their masters), web, PostgreSQL, Redis "
             "| machine busy | other cores "
             "| tasks per worker |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        cpu = run["cpu_ms_per_job"]
        lines.append(
            f"| {run['workers']} | {run['jobs']} | {run['enqueue_s']:.2f} | {run['elapsed_s']:.2f} "
            f"| {_f(run['jobs_per_s'], 1)} | **{_f(run['jobs_per_s_per_worker'], 1)}** "
            f"| {_f(run['db_jobs_per_s'], 1)} | {_f(run['task_ms_p50'], 1)} / {_f(run['task_ms_mean'], 1)} / "
            f"{_f(run['task_ms_p99'], 1)} "
            f"| {cpu['workers']:.1f} ({cpu['worker_masters']:.1f}), {cpu['server']:.2f}, {cpu['pg']:.2f}, "
            f"{cpu['redis']:.2f} "
            f"| {run['machine_busy'] * 100:.0f}% | {run['other_cores']:.2f} | {run['tasks_per_worker']} |")
    return "\n".join(lines)


def render_written(runs: list[dict]) -> str:
    lines = ["| worker processes | jobs succeeded | progress = 100 | one attempt | assets ready "
             "| files on disk | usage_events asset.generate | events started / progress / completed "
             "(lines; jobs) |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in runs:
        ev = run["events"]
        text = " / ".join(f"{ev.get(k, {}).get('lines', 0)}" for k in ("started", "progress", "completed"))
        jobs = " / ".join(f"{ev.get(k, {}).get('jobs', 0)}" for k in ("started", "progress", "completed"))
        lines.append(f"| {run['workers']} | {run['succeeded']} of {run['jobs']} | {run['progress_100']} "
                     f"| {run['one_attempt']} | {run['assets_ready']} | {run['files_on_disk']} "
                     f"| {run['usage_events']} | {text}; {jobs} |")
    return "\n".join(lines)


def render_profile(profile: dict) -> str:
    parts = profile["parts"]
    total = {k: sum(v for name, v in p.items() if not name.startswith("  ")) for k, p in parts.items()}
    lines = [f"run_job in one process (no Celery): {profile['timed_jobs']} jobs timed part by part, "
             f"{profile['profiled_jobs']} more under cProfile; ms per job.", "",
             "| part of run_job | wall ms | CPU ms | share of wall | wall ms under cProfile |",
             "|---|---:|---:|---:|---:|"]
    for name in parts["wall_ms"]:
        wall, cpu, prof = (parts[k][name] for k in ("wall_ms", "cpu_ms", "cprofile_ms"))
        share = wall / total["wall_ms"] * 100
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {share:.0f}% | {prof:.2f} |")
    lines.append(f"| **run_job** | **{total['wall_ms']:.2f}** | **{total['cpu_ms']:.2f}** | 100% "
                 f"| {total['cprofile_ms']:.2f} |")
    lines.append("")
    lines.append(f"SQL per job (cProfile's counts): {profile['statements_per_job']:.1f} statements, "
                 f"{profile['commits_per_job']:.1f} commits, {profile['sql_ms_per_job']:.2f} ms in psycopg's "
                 "execute and commit (under cProfile).")
    return "\n".join(lines)


def exit_status(summaries: dict, runs: list[dict]) -> int:
    failed = sum(s.errors for s in summaries.values())
    failed += sum(run["enqueue"]["errors"] + run["jobs"] - run["succeeded"] for run in runs)
    return 0 if failed == 0 else 2


# --------------------------------------------------------------------------------------------
# Setup and main


@dataclass
class Bench:
    """Everything one run holds."""

    args: argparse.Namespace
    workdir: Path
    database: BenchDatabase
    queue: QueueRedis | None = None
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    server: Server | None = None
    tables: JobTables | None = None
    targets: list[Target] = field(default_factory=list)


def set_up(bench: Bench, cleanup: ExitStack) -> None:
    """Database, Redis, Gaia under gunicorn, the key, the targets, a warm-up."""
    args = bench.args
    bench.queue = (QueueRedis.private(bench.workdir) if args.redis_url is None
                   else QueueRedis(args.redis_url))
    cleanup.callback(bench.queue.close)
    bench.queue.claim()
    args.redis_url = bench.queue.url  # what Gaia and the workers get as REDIS_URL
    bench.database.create()
    cleanup.callback(bench.database.drop)
    log(f"created database {bench.database.name}")
    base = clean_environment()
    base.update(HOST="127.0.0.1", WEB_CONCURRENCY=str(args.web_workers))
    bench.env = gaia_environment(base, bench.database.url, bench.workdir / "instance", args)
    key = migrate_and_key(bench.env)
    log("migrated and created the admin key")
    bench.tables = JobTables(bench.database.url)
    cleanup.callback(bench.tables.close)
    port = free_port()
    bench.server = Server("gaia", "wsgi:app", dict(bench.env, PORT=str(port)), port,
                          bench.workdir / "gaia.log")
    cleanup.callback(bench.server.stop)
    bench.server.start()
    bench.server.wait_ready(MODELS_PATH, {"X-API-Key": key}, args.web_workers)
    bench.targets = [Target("models", "GET", MODELS_PATH, 200),
                     Target("enqueue", "POST", GENERATE_PATH, 202, generate_body(args.description))]
    bench.headers = {"models": {"X-API-Key": key},
                     "enqueue": {"X-API-Key": key, "Content-Type": "application/json"}}
    for target in bench.targets:
        warm = load(bench.server, target, bench.headers[target.name], 8, duration=args.warmup)
        if warm.errors or not warm.ok:
            raise RuntimeError(f"warm-up of {target.name} failed: {warm.summary()}")
        log(f"warm-up {target.name}: {warm.summary()}")
    bench.queue.purge()
    bench.tables.clear()


def run_phases(bench: Bench) -> dict:
    args, server, tables = bench.args, bench.server, bench.tables
    meters = Meters(server, PgBackends(bench.database), bench.queue.pids())
    summaries, rounds = enqueue_rounds(meters, bench.targets, bench.headers, args.concurrency,
                                       args.rounds, args.duration, tables, bench.queue)
    enqueue = bench.targets[1]
    worker_env = dict(bench.env, **WORKER_ENV)
    runs = []
    for count in args.workers:
        runs.append(end_to_end(count, server, enqueue, bench.headers["enqueue"], tables, bench.queue,
                               meters.pg, worker_env, bench.workdir, bench.workdir / "instance" / "assets",
                               args.jobs, args.enqueue_concurrency))
    profile = None
    if args.profile_jobs:
        profile = run_profile(server, enqueue, bench.headers["enqueue"], tables, bench.queue,
                              bench.env, args.profile_jobs, bench.workdir)
    if server.proc.poll() is not None:
        raise RuntimeError(f"gaia died during the run:\n{server.log_tail()}")
    return {"summaries": summaries, "rounds": rounds, "runs": runs, "profile": profile}


def print_report(bench: Bench, results: dict, header: str) -> list[dict]:
    args, summaries = bench.args, results["summaries"]
    verdicts = enqueue_verdicts(summaries, args.concurrency)
    print()
    print(header)
    print()
    print(render_enqueue(summaries, bench.targets, args.concurrency))
    print()
    made = sum(r.jobs_made for r in results["rounds"] if r.target == "enqueue")
    print(f"Job rows made by the enqueue rounds: {made} (deleted after each round, with their "
          "queued messages).")
    print()
    if results["runs"]:
        print(render_end_to_end(results["runs"]))
        print()
        print(render_written(results["runs"]))
        print()
    if results["profile"]:
        print(render_profile(results["profile"]))
        print()
    for line in verdict_text(verdicts, results["runs"]):
        print(line)
    print()
    print("Per round:")
    print(render_rounds(results["rounds"]))
    return verdicts


def write_json(bench: Bench, results: dict, verdicts: list[dict], meta: dict) -> Path:
    args = bench.args
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return write_results(results_path(args.output, "assets", meta["started_at"]), {
        **meta, "started_at": meta["started_at"].isoformat(), "settings": settings,
        "summary": [{"target": n, "concurrency": c, "median_rps": s.median("rps"),
                     "median_p50_ms": s.median("p50_ms"), "median_p99_ms": s.median("p99_ms"),
                     "server_cpu_us_per_request": s.server_cpu_us_per_request,
                     "pg_cpu_us_per_request": per_request_us(s, "pg_cpu_s"),
                     "redis_cpu_us_per_request": per_request_us(s, "redis_cpu_s"),
                     "ok": s.ok, "errors": s.errors}
                    for (n, c), s in results["summaries"].items()],
        "verdicts": verdicts, "end_to_end": results["runs"], "profile": results["profile"],
        "rounds": [r.row() for r in results["rounds"]],
    })


def _ints(text: str) -> list[int]:
    values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a comma list of positive integers")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target and concurrency (3)")
    parser.add_argument("--concurrency", type=_ints, default=[1, 8], help="enqueue rounds' connections (1,8)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per end-to-end run (200)")
    parser.add_argument("--workers", type=_ints, default=[1, 2],
                        help="Celery worker processes per end-to-end run, a list (1,2); each is "
                        "one `celery worker --concurrency 1`")
    parser.add_argument("--enqueue-concurrency", type=int, default=8,
                        help="connections that enqueue the end-to-end jobs (8)")
    parser.add_argument("--web-workers", type=int, default=2,
                        help="gunicorn workers (2: gunicorn.conf.py's default with Redis)")
    parser.add_argument("--profile-jobs", type=int, default=63,
                        help="jobs of the in-process profile: 3 warm up, half of the rest timed "
                        "part by part, half under cProfile (63; 0 skips it)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (2)")
    parser.add_argument("--description", default=DEFAULT_DESCRIPTION, help="the images' description")
    parser.add_argument("--redis-url", type=_loopback_url, default=None,
                        help="REDIS_URL: a database number of a running Redis, empty at the start "
                        "and emptied at the end, e.g. redis://127.0.0.1:6379/11 (default: a "
                        "private redis-server on a free port, stopped at the end)")
    parser.add_argument("--pg-url", type=_loopback_url,
                        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help=f"maintenance database URL (env BENCH_PG_URL; {DEFAULT_PG_URL})")
    parser.add_argument("--rate-limit", default=BENCH_RATE_LIMIT, help="RATE_LIMIT_DEFAULT for Gaia")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results file (default bench/results/assets-<time>.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs and asset files")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.jobs < 1 or args.profile_jobs in (1, 2, 3, 4):
        parser.error("rounds, duration and jobs must be positive; --profile-jobs 0 or at least 5")
    args.auth_cache_ttl = args.last_used_flush_interval = None  # the app's defaults
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--profile-child"]:
        return profile_child()
    args = parse_args(argv)
    install_signal_handlers()
    meta = {"started_at": datetime.now(timezone.utc), "gaia_revision": git_revision(),
            "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()}}
    workdir = Path(tempfile.mkdtemp(prefix="gaia-bench-assets-"))
    private_redis = args.redis_url is None
    bench = Bench(args, workdir, BenchDatabase(args.pg_url))
    exit_code = 1
    with ExitStack() as cleanup:
        try:
            meta["machine"]["background_cores_busy"] = idle = background_cores()
            log(f"background load before start: {idle:.2f} of {os.cpu_count()} cores busy")
            set_up(bench, cleanup)
            results = run_phases(bench)
            header = (f"Gaia {meta['gaia_revision']}, {meta['started_at']:%Y-%m-%d %H:%M} UTC: gunicorn "
                      f"gevent x {args.web_workers} workers, REDIS_URL={args.redis_url}"
                      f"{' (a private redis-server)' if private_redis else ''}, PostgreSQL; "
                      f"{args.rounds} alternating rounds x {args.duration:g} s per target and "
                      f"concurrency; {args.jobs} jobs per end-to-end run; {os.cpu_count()} cores, "
                      f"{idle:.2f} busy with other work before start.")
            verdicts = print_report(bench, results, header)
            output = write_json(bench, results, verdicts, meta)
            log(f"results written to {output}")
            exit_code = exit_status(results["summaries"], results["runs"])
        except (KeyboardInterrupt, Interrupted) as exc:
            exit_code = interrupted(exc)
        except Exception as exc:
            log(f"failed: {exc!r}")
            if bench.server is not None and bench.server.proc is not None:
                log(f"--- gaia log tail ---\n{bench.server.log_tail()}")
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    remove_workdir(workdir, args.keep_logs)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
