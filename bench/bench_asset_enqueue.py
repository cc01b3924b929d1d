"""Where `POST /api/v0.2/assets/generate` spends the web process's CPU, in process.

Gaia's app is called as a WSGI callable in this one process (as a gunicorn worker calls it),
on PostgreSQL and a Redis of the bench's own (a private redis-server on a free port, as
bench_assets.py starts it; or --redis-url), so what is measured is Gaia's request path alone:

  1. CPU per call of the enqueue and of an authenticated `GET /api/v0.2/models`, and of the
     enqueue with the send to Celery replaced by nothing, alternating, best of --repeats;
     the queue and the job tables are emptied between batches, so each batch starts empty;
  2. round trips per enqueue to PostgreSQL (libpq's protocol trace) and Redis (INFO
     commandstats), and CPU per enqueue of its parts (inclusive), timed by small wrappers
     around the functions that make them, which cost a few µs each where cProfile adds a
     cost to every call;
  3. the enqueue under cProfile (a CPU clock), top functions by cumulative and by own time.

    .venv/bin/python bench/bench_asset_enqueue.py [--requests 300] [--repeats 3] [--top 30] [--gevent]

With --gevent the process is patched by gevent first (as gunicorn's gevent worker is), so
that waiting on PostgreSQL and Redis goes through gevent's hub as it does in production.

It makes its own PostgreSQL database gaia_bench_<random> (dropped at the end). Only
127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and "--gevent" in sys.argv[1:]:
    from gevent import monkey

    monkey.patch_all()  # before anything below imports socket users (psycopg, redis)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_assets import (  # noqa: E402
    BENCH_RATE_LIMIT,
    DEFAULT_DESCRIPTION,
    GENERATE_PATH,
    MODELS_PATH,
    JobTables,
    QueueRedis,
    generate_body,
)
from bench.common import (  # noqa: E402
    DEFAULT_PG_URL,
    BenchDatabase,
    _loopback_url,
    clean_environment,
    gaia_environment,
    git_revision,
    migrate_and_key,
    release_app,
    time_calls,
    wsgi_caller,
)


class Enqueue:
    """Gaia's app in this process, its key, and the tables and queue it fills."""

    def __init__(self, app, key: str, tables: JobTables, queue: QueueRedis, body: bytes) -> None:
        self.app, self.tables, self.queue = app, tables, queue
        auth = {"X-API-Key": key}
        self.models = wsgi_caller(app, "GET", MODELS_PATH, auth, check=False)
        self.enqueue = wsgi_caller(app, "POST", GENERATE_PATH,
                                   dict(auth, **{"Content-Type": "application/json"}), body,
                                   expect="202", check=False)

    def empty(self) -> None:
        self.queue.purge()
        self.tables.clear()

    def without_dispatch(self):
        """The enqueue with the send to the broker replaced by nothing."""
        runtime = self.app.extensions["gaia"].assets

        def call() -> None:
            runtime.dispatch = lambda job_id, *, delay=0.0: None
            try:
                self.enqueue()
            finally:
                del runtime.dispatch

        return call

    def measure(self, n: int, repeats: int) -> dict[str, tuple[float, float]]:
        rows = [("GET /api/v0.2/models", self.models), ("POST /api/v0.2/assets/generate", self.enqueue),
                ("  the same, the send to Celery replaced by nothing", self.without_dispatch())]
        best: dict[str, tuple[float, float]] = {}
        for _ in range(repeats):
            for label, call in rows:
                self.empty()
                wall, cpu = time_calls(call, n)
                if label not in best or cpu < best[label][1]:
                    best[label] = (wall, cpu)
        self.empty()
        return best

    def profile(self, n: int, top: int, save: Path | None = None) -> None:
        # A CPU clock: waiting on PostgreSQL and Redis is not this process's cost.
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for _ in range(n):
            self.enqueue()
        profiler.disable()
        self.empty()
        if save is not None:
            pstats.Stats(profiler).dump_stats(save)
        for sort in ("cumulative", "tottime"):
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats(sort).print_stats(top)
            text = stream.getvalue().replace(str(ROOT) + "/", "")
            print(f"--- cProfile of {n} enqueues (profiler overhead inflates small calls), "
                  f"sorted by {sort} ---")
            print(text[text.find("   ncalls"):].rstrip())
            print()


# (label, module, attribute path): the parts of an enqueue, each timed whole (so a part's
# figure includes the parts it calls). A part missing from the code measured is left out.
PARTS = [
    ("read the body (BodyParser.load_json)", "gaia_app.blueprint", "BodyParser.load_json"),
    ("GenerateSchema.load", "blueprints.asset.schemas", "GenerateSchema.load"),
    ("IdempotencyHeaderSchema.load", "blueprints.asset.schemas", "IdempotencyHeaderSchema.load"),
    ("authenticate (key cache hit)", "gaia_app.identity.authenticator", "Authenticator.authenticate"),
    ("rate limit (Redis)", "gaia_app.runtime.ratelimit", "RateLimiter.hit"),
    ("create_job", "blueprints.asset.jobs", "create_job"),
    ("  option, cost and field checks (_checked_request)", "blueprints.asset.jobs", "_checked_request"),
    ("  take the connection (job_rows.begin)", "blueprints.asset.job_rows", "begin"),
    ("  write the rows (job_rows.insert_job)", "blueprints.asset.job_rows", "insert_job"),
    ("  ORM flush (Session.flush)", "sqlalchemy.orm.session", "Session.flush"),
    ("Session.commit (with what runs after it)", "sqlalchemy.orm.session", "Session.commit"),
    ("  send to Celery (CeleryDispatcher.dispatch)", "gaia_app.jobs.dispatch", "CeleryDispatcher.dispatch"),
    ("AcceptedSchema.dump", "blueprints.asset.schemas", "AcceptedSchema.dump"),
]


class PartTimer:
    """CPU time (this thread's) spent in each part of PARTS, inclusive."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.patched: list[tuple[object, str, object]] = []

    def install(self) -> list[str]:
        import importlib

        found = []
        for label, module_name, path in PARTS:
            try:
                owner = importlib.import_module(module_name)
            except ImportError:
                continue
            *owners, name = path.split(".")
            for part in owners:
                owner = getattr(owner, part, None)
            if owner is not None and hasattr(owner, name):
                self._wrap(owner, name, label)
                found.append(label)
        return found

    def _wrap(self, owner, name: str, label: str) -> None:
        function, totals = getattr(owner, name), self.totals

        def timed(*args, **kwargs):
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] = totals.get(label, 0.0) + time.thread_time() - started

        self.patched.append((owner, name, vars(owner).get(name)))
        setattr(owner, name, timed)

    def uninstall(self) -> None:
        while self.patched:
            owner, name, original = self.patched.pop()
            if original is None:
                delattr(owner, name)  # it was inherited
            else:
                setattr(owner, name, original)


def round_trips(bench: Enqueue, n: int) -> tuple[float, float, dict[str, float]]:
    """(PostgreSQL round trips, Redis commands, {Redis command: count}) per enqueue over n
    enqueues: libpq's protocol trace of every pooled connection (one ReadyForQuery message
    ends each exchange with the server), and the difference in Redis' INFO commandstats."""
    from psycopg import pq
    from sqlalchemy import event

    from gaia_app.extensions import db

    with bench.app.app_context():
        engine = db.engine
    trace = tempfile.TemporaryFile("w+")

    def on_checkout(dbapi_connection, _record, _proxy):
        dbapi_connection.pgconn.trace(trace.fileno())
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def on_checkin(dbapi_connection, _record):
        if dbapi_connection is not None:
            dbapi_connection.pgconn.untrace()

    def redis_calls() -> dict[str, int]:
        stats = bench.queue.client.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}

    bench.empty()
    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)
    before = redis_calls()
    try:
        for _ in range(n):
            bench.enqueue()
    finally:
        after = redis_calls()
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)
        bench.empty()
    trace.seek(0)
    ready = sum(1 for line in trace if "\tReadyForQuery" in line and line.startswith("B"))
    commands = {name: (after[name] - before.get(name, 0)) / n for name in after
                if after[name] != before.get(name, 0)}
    commands.pop("info", None)
    return ready / n, sum(commands.values()), commands


def time_parts(bench: Enqueue, n: int) -> tuple[float, list[tuple[str, float]]]:
    """(CPU µs per enqueue, [(part, CPU µs per enqueue)]) over n enqueues with the timers on."""
    timer = PartTimer()
    labels = timer.install()
    try:
        bench.empty()
        _, whole = time_calls(bench.enqueue, n)
    finally:
        timer.uninstall()
        bench.empty()
    return whole, [(label, timer.totals.get(label, 0.0) / n * 1e6) for label in labels]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="calls per measurement (300)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating batches, best kept (3)")
    parser.add_argument("--profile", type=int, default=300, help="enqueues under cProfile (300; 0 skips)")
    parser.add_argument("--top", type=int, default=30, help="profile lines to print (30)")
    parser.add_argument("--save-profile", type=Path, default=None,
                        help="also write the cProfile data to this file (pstats format)")
    parser.add_argument("--gevent", action="store_true",
                        help="patch the process with gevent first, as gunicorn's gevent worker")
    parser.add_argument("--description", default=DEFAULT_DESCRIPTION, help="the image's description")
    parser.add_argument("--redis-url", type=_loopback_url, default=None,
                        help="an empty database number of a running Redis (default: a private "
                        "redis-server on a free port)")
    parser.add_argument("--pg-url", type=_loopback_url,
                        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help=f"maintenance database URL (env BENCH_PG_URL; {DEFAULT_PG_URL})")
    args = parser.parse_args(argv)
    args.rate_limit = BENCH_RATE_LIMIT
    args.auth_cache_ttl = args.last_used_flush_interval = None  # the app's defaults
    return args


def start_app(args: argparse.Namespace, database: BenchDatabase, queue: QueueRedis, workdir: Path):
    """Migrate the database, make the admin key and build Gaia's app here; (app, key)."""
    database.create()
    env = gaia_environment(clean_environment(), database.url, workdir / "instance", args)
    env["LOG_LEVEL"] = "WARNING"
    key = migrate_and_key(env)
    os.environ.clear()
    os.environ.update(env)

    from gaia_app import create_app

    return create_app(), key


def report(bench: Enqueue, args: argparse.Namespace) -> None:
    best = bench.measure(args.requests, args.repeats)
    models_cpu = best["GET /api/v0.2/models"][1]
    print("| request | wall µs/call | CPU µs/call | × GET /models |")
    print("|---|---:|---:|---:|")
    for label, (wall, cpu) in best.items():
        print(f"| {label} | {wall:.0f} | {cpu:.0f} | {cpu / models_cpu:.2f}× |")
    print()
    postgres, redis_commands, by_command = round_trips(bench, args.requests)
    named = ", ".join(f"{name} {count:g}" for name, count in sorted(by_command.items()))
    print(f"Round trips per enqueue: PostgreSQL {postgres:g} (ReadyForQuery in libpq's trace), "
          f"Redis {redis_commands:g} commands ({named})")
    print()
    whole, parts = time_parts(bench, args.requests)
    print("| part of an enqueue (timed alone, inclusive) | CPU µs per enqueue |")
    print("|---|---:|")
    for label, cpu in parts:
        print(f"| {label} | {cpu:.0f} |")
    print(f"| the whole enqueue, with these timers | {whole:.0f} |")
    print()
    if args.profile:
        bench.profile(args.profile, args.top, args.save_profile)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="gaia-bench-enqueue-"))
    database = BenchDatabase(args.pg_url)
    queue = app = tables = None
    try:
        queue = QueueRedis.private(workdir) if args.redis_url is None else QueueRedis(args.redis_url)
        queue.claim()
        args.redis_url = queue.url
        app, key = start_app(args, database, queue, workdir)
        tables = JobTables(database.url)
        bench = Enqueue(app, key, tables, queue, generate_body(args.description))
        for _ in range(100):
            bench.models()
            bench.enqueue()
        bench.empty()
        patched = ", patched by gevent" if args.gevent else ""
        print(f"Gaia {git_revision()}, in-process WSGI calls{patched}, PostgreSQL and REDIS_URL="
              f"{queue.url}; {args.requests} calls per measurement, alternating, best of "
              f"{args.repeats} by CPU time")
        print()
        report(bench, args)
        return 0
    finally:
        if tables is not None:
            tables.close()
        if app is not None:
            release_app(app)
        database.drop()
        if queue is not None:
            queue.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
