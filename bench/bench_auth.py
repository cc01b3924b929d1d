"""What authentication costs per request, and how fast a revoked API key stops working.

Run from the repository root with the project's virtualenv (see bench/README.md):

    .venv/bin/python bench/bench_auth.py                                      # ~2.5 min
    .venv/bin/python bench/bench_auth.py --redis-url redis://127.0.0.1:6379/3   # ~4 min

In one run, against Gaia under gunicorn (sync workers, gunicorn.conf.py, identical settings;
RATE_LIMIT_DEFAULT and AUTH_RATE_LIMIT raised to 1000000/day so that nothing is refused; the
limiter still runs on every authenticated request, and with Redis still makes its round trip,
see BENCH_AUTH_RATE_LIMIT):

1. Cost of authentication. Each server runs `bench.auth_app:create_bench_app()`: the real app
   plus two bench routes around the same view (the body of GET /api/v0.2/models), one open and
   one behind `require_auth`. Servers, each with 2 workers and its own database (a copy of one
   migrated template, so that pg_stat_database counts one server's transactions):
     ttl60  no Redis, AUTH_CACHE_TTL=60            targets: open, key (X-API-Key), jwt (Bearer)
     ttl1   no Redis, AUTH_CACHE_TTL default (1 s) targets: key, jwt (what the default costs)
     redis  --redis-url, AUTH_CACHE_TTL default (60 s)  targets: open, key, jwt, and a key
            with its own high limit (the limiter's batched path)
   a. Alternating rounds (every target in turn, 3 rounds x 2 s, c=8 then c=1): median req/s,
      p50, p99, server CPU µs per request (master + workers, /proc), Redis server CPU.
   b. Interleaved runs (5 s per server and concurrency): every connection cycles through the
      open and the authenticated requests of one server, so the added p50 is measured under
      the very same conditions (the rounds' p50 drifts more than the effect between rounds).
   c. Database: pg_stat_database of each server's database before and after (a) and (b), and
      what the app itself sent (bench.auth_app's BENCH_SQL_LOG).
   d. In-process (one child process, one app per server's settings, no gunicorn): CPU and wall
      time of whole WSGI calls of both routes, of `Authenticator.authenticate` (cache hit and
      miss) and of `RateLimiter.hit` (dict, or Redis), and a cProfile of the Redis request.
2. Revocation across workers. A server with 3 workers and an access log that names the worker
   (pid) of every request. Per repetition: make a key (POST /api/v0.2/keys), poll with it on
   new connections (~200 req/s, 4 threads) until every worker has served it, wait a random
   0-1 s, revoke it (DELETE /api/v0.2/keys/<id>) and keep polling until every worker has
   refused it. Reported: time from the DELETE's response to the last worker's first 401
   (median and max over 10 repetitions), and how many polls sent after that response were
   still served; without Redis (AUTH_CACHE_TTL default 1 s) and, with --redis-url, with Redis
   (default 60 s, changes pushed over pub/sub).

Everything it starts is stopped, and every database it made is dropped, on exit, on an
exception, on Ctrl-C / SIGTERM and after --time-limit (360 s). Only 127.0.0.1 is contacted.
It reuses the helpers of common.py (databases, gunicorn, /proc accounting, in-process WSGI
calls), bench_models_auth.py (rounds and their summaries) and loadgen.py.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import random
import re
import secrets
import signal
import statistics
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

from psycopg import sql  # noqa: E402  (a Gaia runtime dependency)

from bench.auth_app import AUTH_PATH, OPEN_PATH  # noqa: E402
from bench.bench_models_auth import MODELS_PATH, Round, Summary  # noqa: E402
from bench.common import (  # noqa: E402
    DEFAULT_PG_URL,
    BenchDatabase,
    Interrupted,
    Server,
    _cpu_seconds,
    _loopback_url,
    _machine_jiffies,
    background_cores,
    clean_environment,
    create_admin_key,
    free_port,
    git_revision,
    install_signal_handlers,
    interrupted,
    log,
    redis_server_pids,
    remove_workdir,
    results_path,
    run_cli,
    write_results,
)
from bench.loadgen import _read_response, _timeout, percentile, run_load  # noqa: E402

API = "/api/v0.2"
APP_TARGET = "bench.auth_app:create_bench_app()"
TARGET_ADDED_P50_MS = 0.2
# Raised from the default 60/minute so that nothing is refused. With Redis, limits of 100 or
# more per window are counted in the process and reported in batches (gaia_app.ratelimit),
# so this one is batched too; limits under 100 per window (the default 60/minute) make one
# Redis round trip per request (bench/README.md gives that cost as measured before batching).
BENCH_AUTH_RATE_LIMIT = "1000000/day"
HIGH_KEY_LIMIT = "1000000/minute"  # per-key limits have at most 7 digits
# PostgreSQL 15 backends publish their counters at most once a second, and when they go idle
# within that second, only after PGSTAT_IDLE_INTERVAL (10 s). Waiting 1.5 s (as
# bench_models_auth.py does) can therefore move the warm-up's queries into the measurement.
STATS_SETTLE_S = 11.0
PROBE_LOG_FORMAT = "gaia-bench-access pid=%(p)s status=%(s)s probe=%({x-probe}i)s"
PROBE_LINE_RE = re.compile(r"gaia-bench-access pid=<(\d+)> status=(\d+) probe=(\S+)")


# --------------------------------------------------------------------------------------------
# Plumbing: databases copied from one migrated template, HTTP on fresh loopback connections


class CopiedDatabase(BenchDatabase):
    """A throw-away database made as a copy of an already migrated one (fast: no Alembic)."""

    def __init__(self, admin_url: str, template: str) -> None:
        super().__init__(admin_url)
        self.template = template

    def create(self) -> None:
        self._admin().execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(self.name), sql.Identifier(self.template)))



def _in_a_month() -> str:
    """Keys made with a signed-in session state when they expire."""
    from datetime import datetime, timedelta, timezone

    return (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()

def call(port: int, method: str, path: str, *, headers: dict | None = None,
         body: dict | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a new connection to 127.0.0.1 (no proxies, no keep-alive)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def call_json(port: int, method: str, path: str, expect: int, **kwargs) -> dict:
    status, data = call(port, method, path, **kwargs)
    if status != expect:
        raise RuntimeError(f"{method} {path} answered {status} (expected {expect}): {data[:300]!r}")
    return json.loads(data) if data else {}


def wait_ready(server: Server, workers: int, timeout: float = 60.0) -> None:
    """Until the open bench route answers 200 and all workers are up (bounded)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode} before it "
                               f"was ready:\n{server.log_tail()}")
        try:
            status, _ = call(server.port, "GET", OPEN_PATH, timeout=2)
            if status == 200 and len(server.workers()) >= workers:
                return
            last = f"status {status}, {len(server.workers())} workers"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s ({last})")


@dataclass
class Identity:
    """A user of one server, with a JWT from /auth/login and an API key made with it."""

    email: str
    jwt: str
    key: str
    key_id: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.jwt}"}


def sign_up(port: int, label: str) -> Identity:
    email = f"bench-{label}-{secrets.token_hex(4)}@gaia.dev"
    password = secrets.token_urlsafe(18)
    call_json(port, "POST", f"{API}/auth/register", 201, body={"email": email, "password": password})
    token = call_json(port, "POST", f"{API}/auth/login", 200,
                      body={"email": email, "password": password})["access_token"]
    made = call_json(port, "POST", f"{API}/keys", 201, headers={"Authorization": f"Bearer {token}"},
                     body={"name": f"bench-{label}", "expires_at": _in_a_month()})
    return Identity(email, token, made["key"], str(made["id"]))


# --------------------------------------------------------------------------------------------
# Part 1: cost of authentication


@dataclass
class GaiaServer:
    server: Server
    database: BenchDatabase
    env: dict[str, str]
    settings: str  # for the report
    identity: Identity | None = None


@dataclass
class Target:
    label: str  # e.g. "ttl60 key"
    kind: str  # open, key or jwt
    gaia: GaiaServer
    path: str
    key: str | None = None  # another API key than the identity's

    @property
    def headers(self) -> dict[str, str]:
        if self.key:
            return {"X-API-Key": self.key}
        if self.kind == "key":
            return {"X-API-Key": self.gaia.identity.key}
        if self.kind == "jwt":
            return self.gaia.identity.bearer
        return {}


@dataclass
class AuthRound(Round):
    redis_cpu_s: float = 0.0


def measure_target(target: Target, concurrency: int, duration: float, index: int,
                   redis_pids: list[int]) -> AuthRound:
    server = target.gaia.server
    busy0, total0 = _machine_jiffies()
    cpu0 = server.cpu_seconds()
    redis0 = sum(_cpu_seconds(p) for p in redis_pids)
    result = run_load(server.base_url + target.path, concurrency=concurrency, duration=duration,
                      headers=target.headers)
    redis1 = sum(_cpu_seconds(p) for p in redis_pids)
    cpu1 = server.cpu_seconds()
    busy1, total1 = _machine_jiffies()
    busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
    return AuthRound(target.label, concurrency, index, result, cpu1 - cpu0, busy,
                     redis_cpu_s=redis1 - redis0)


def paired_added_p50(this: Summary, base: Summary) -> list[float]:
    return [t.result.p50_ms - b.result.p50_ms for t, b in zip(this.rounds, base.rounds)]


def render_cost_table(targets: list[Target], summaries: dict, concurrencies: list[int],
                      open_of: dict[str, str]) -> tuple[str, list[dict]]:
    lines = [
        "| conc. | server | target | req/s | p50 ms | p99 ms | server CPU µs/req "
        "| added p50 ms vs open (paired median, min…max) | added CPU µs/req | Redis CPU µs/req | errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for c in concurrencies:
        for t in targets:
            s: Summary = summaries[(t.label, c)]
            redis_us = (sum(r.redis_cpu_s for r in s.rounds) / s.ok * 1e6) if s.ok else float("nan")
            row = {"concurrency": c, "target": t.label, "server": t.gaia.server.name,
                   "kind": t.kind, "median_rps": s.median("rps"),
                   "median_p50_ms": s.median("p50_ms"), "median_p99_ms": s.median("p99_ms"),
                   "server_cpu_us_per_request": s.server_cpu_us_per_request,
                   "redis_cpu_us_per_request": redis_us,
                   "client_cpu_us_per_request": s.client_cpu_us_per_request,
                   "ok": s.ok, "errors": s.errors}
            added_text = cpu_text = "—"
            if t.kind != "open":
                base = summaries[(open_of[t.label], c)]
                diffs = paired_added_p50(s, base)
                added = statistics.median(diffs)
                added_cpu = s.server_cpu_us_per_request - base.server_cpu_us_per_request
                row.update(open_target=open_of[t.label], added_p50_ms=added,
                           added_p50_ms_paired=diffs, added_cpu_us=added_cpu)
                cross = "" if open_of[t.label].split()[0] == t.gaia.server.name else " ¹"
                added_text = f"**{added:+.3f}** ({min(diffs):+.3f}…{max(diffs):+.3f}){cross}"
                cpu_text = f"{added_cpu:+.0f}{cross}"
            redis_text = f"{redis_us:.0f}" if t.gaia.server.name == "redis" else "—"
            lines.append(
                f"| {c} | {t.gaia.server.name} | {t.label.split(' ', 1)[1]} | {row['median_rps']:.0f} "
                f"| {row['median_p50_ms']:.3f} | {row['median_p99_ms']:.2f} "
                f"| {row['server_cpu_us_per_request']:.0f} | {added_text} | {cpu_text} "
                f"| {redis_text} | {s.errors} |"
            )
            rows.append(row)
    return "\n".join(lines), rows


def render_rounds(rounds: list[AuthRound]) -> str:
    lines = ["| conc. | round | target | req/s | p50 ms | p99 ms | srv CPU µs/req | machine busy "
             "| other cores |", "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rounds:
        per_req = r.server_cpu_s / r.result.ok * 1e6 if r.result.ok else float("nan")
        lines.append(f"| {r.concurrency} | {r.index} | {r.target} | {r.result.rps:.0f} "
                     f"| {r.result.p50_ms:.3f} | {r.result.p99_ms:.2f} | {per_req:.0f} "
                     f"| {r.machine_busy * 100:.0f}% | {r.other_cores:.2f} |")
    return "\n".join(lines)


async def _mixed_async(port: int, kinds: list[tuple[str, str, dict]], concurrency: int,
                       duration: float, timeout: float) -> tuple[dict, dict, float]:
    requests = []
    for label, path, headers in kinds:
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append("User-Agent: gaia-bench-loadgen")
        requests.append((label, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")))
    samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in kinds}
    errors: dict[str, int] = {}
    start = time.perf_counter()
    deadline = start + duration

    async def connection(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            label, request = requests[i % len(requests)]
            i += 1
            sent = time.perf_counter()
            writer = None
            try:
                async with _timeout(timeout):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(request)
                    status, _, _ = await _read_response(reader, "GET")
            except Exception as exc:  # noqa: BLE001  (any failure is counted, never raised)
                errors[f"{label}: {type(exc).__name__}"] = errors.get(f"{label}: {type(exc).__name__}", 0) + 1
                continue
            finally:
                if writer is not None:
                    writer.close()
            done = time.perf_counter()
            if status == 200:
                samples[label].append((done - start, (done - sent) * 1000.0))
            else:
                errors[f"{label}: status {status}"] = errors.get(f"{label}: status {status}", 0) + 1

    tasks = [asyncio.ensure_future(connection(k)) for k in range(concurrency)]
    try:
        await asyncio.wait(tasks, timeout=duration + timeout + 5)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    return samples, errors, time.perf_counter() - start


def run_mixed(port: int, kinds: list[tuple[str, str, dict]], concurrency: int, duration: float,
              timeout: float = 10.0, parts: int = 3) -> dict:
    """Interleaved load: each connection cycles through `kinds` (label, path, headers), one
    request per new connection, so every kind sees the same server state and the same noise.
    Per kind: count, p50/p90/p99 and the p50 in each of `parts` equal slices of the run."""
    samples, errors, elapsed = asyncio.run(
        _mixed_async(port, kinds, concurrency, duration, timeout))
    out = {"concurrency": concurrency, "elapsed_s": elapsed, "errors": errors, "kinds": {}}
    for label, values in samples.items():
        latencies = sorted(v for _, v in values)
        slices = []
        for k in range(parts):
            lo, hi = elapsed * k / parts, elapsed * (k + 1) / parts
            part = sorted(v for t, v in values if lo <= t < hi)
            slices.append(percentile(part, 50))
        out["kinds"][label] = {"n": len(latencies), "p50_ms": percentile(latencies, 50),
                               "p90_ms": percentile(latencies, 90),
                               "p99_ms": percentile(latencies, 99),
                               "mean_ms": sum(latencies) / len(latencies) if latencies else None,
                               "p50_ms_by_slice": slices}
    return out


def sql_log_counts(path: Path, since: float, until: float) -> dict[str, int]:
    """What the app sent to the database between two times, from its BENCH_SQL_LOG."""
    counts: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return counts
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) == 4 and since <= float(parts[0]) <= until:
            kind = "checkout" if parts[2] == "checkout" else parts[3]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------
# Part 1b: in-process timings (a child process with the server's environment)


def inprocess_child(spec: dict) -> dict:
    """Runs in a child process (the first server's environment); prints nothing but JSON.

    Builds one app per server configuration in this one process (create_app() with the other
    servers' settings as overrides), so that their timings alternate and can be compared.
    """
    import cProfile
    import io
    import pstats

    from bench.auth_app import create_bench_app
    from bench.common import time_calls, wsgi_caller
    from gaia_app.extensions import db

    n = spec["n"]
    apps = {}
    for item in spec["apps"]:
        app = create_bench_app(item["overrides"])
        apps[item["name"]] = (app, app.extensions["gaia"].authenticator, item)
    out: dict = {name: {"redis": bool(auth.settings.redis_url),
                        "auth_cache_ttl": auth.settings.auth_cache_ttl, "wsgi": {}, "pieces": {}}
                 for name, (_, auth, _) in apps.items()}

    calls = []
    for name, (app, auth, item) in apps.items():
        key_headers = {"X-API-Key": item["key"]}
        jwt_headers = {"Authorization": f"Bearer {item['jwt']}"}
        calls += [(name, "open route", wsgi_caller(app, "GET", OPEN_PATH, {})),
                  (name, "auth route, API key", wsgi_caller(app, "GET", AUTH_PATH, key_headers)),
                  (name, "auth route, JWT", wsgi_caller(app, "GET", AUTH_PATH, jwt_headers))]
    deadline = time.monotonic() + 5
    for name, (_, auth, _) in apps.items():  # the invalidation listener connects, clears once
        while auth.settings.redis_url and not auth.bus.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        out[name]["listener_connected"] = auth.bus.connected if auth.settings.redis_url else None
    for _, _, fn in calls:
        for _ in range(300):
            fn()
    for _ in range(3):  # alternate; keep each call's least disturbed (lowest CPU) repetition
        for name, label, fn in calls:
            wall, cpu = time_calls(fn, n)
            best = out[name]["wsgi"].get(label)
            if best is None or cpu < best["cpu_us"]:
                out[name]["wsgi"][label] = {"wall_us": wall, "cpu_us": cpu}

    def pieces_of(app, auth, item):
        key_headers = {"X-API-Key": item["key"]}
        jwt_headers = {"Authorization": f"Bearer {item['jwt']}"}
        principal_key = auth.authenticate(key_headers)
        principal_jwt = auth.authenticate(jwt_headers)

        # A miss as a request has it: a connection from the pool (with its pre-ping), the
        # query, and the session's rollback and release at the end.
        def key_miss():
            auth.cache.clear()
            auth.authenticate(key_headers)
            db.session.remove()

        def jwt_miss():
            auth.cache.clear()
            auth.authenticate(jwt_headers)
            db.session.remove()

        return [
            ("authenticate, API key, cache hit", lambda: auth.authenticate(key_headers), n),
            ("authenticate, JWT, cache hit", lambda: auth.authenticate(jwt_headers), n),
            ("RateLimiter.hit, API key (default limit)",
             lambda: app.extensions["gaia"].rate_limiter.hit("principal", principal_key.rate_limit_identity,
                                           principal_key.rate_limit), n),
            ("RateLimiter.hit, JWT user (default limit)",
             lambda: app.extensions["gaia"].rate_limiter.hit("principal", principal_jwt.rate_limit_identity,
                                           principal_jwt.rate_limit), n),
            (f"RateLimiter.hit, a key limited to {HIGH_KEY_LIMIT}",
             lambda: app.extensions["gaia"].rate_limiter.hit("principal", "key:bench-inprocess", HIGH_KEY_LIMIT), n),
            ("authenticate, API key, cache miss (1 query)", key_miss, max(n // 10, 50)),
            ("authenticate, JWT, cache miss (verify + 1 query)", jwt_miss, max(n // 10, 50)),
        ]

    for _ in range(3):
        for name, (app, auth, item) in apps.items():
            with app.app_context():
                for label, fn, count in pieces_of(app, auth, item):
                    fn()
                    wall, cpu = time_calls(fn, count)
                    best = out[name]["pieces"].get(label)
                    if best is None or cpu < best["cpu_us"]:
                        out[name]["pieces"][label] = {"wall_us": wall, "cpu_us": cpu,
                                                      "calls": count}
                auth.cache.clear()

    # Where a Redis-backed authenticated request spends its time: cProfile of the WSGI call.
    for name, (app, auth, item) in apps.items():
        if not auth.settings.redis_url:
            continue
        fn = next(f for nm, label, f in calls if nm == name and label == "auth route, API key")
        fn()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(min(n, 1000)):
            fn()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        out[name]["profile_auth_route_key"] = text.getvalue()

    for name, (app, auth, item) in apps.items():
        try:
            auth.last_used.flush()
        except Exception:  # noqa: BLE001
            pass
        with app.app_context():
            db.engine.dispose()
    return out


def run_inprocess(gaias: list[GaiaServer], n: int, timeout: float = 120.0) -> dict:
    """In-process timings in one child process, with every server's settings as one app each."""
    first = gaias[0]
    env = dict(first.env, LOG_LEVEL="WARNING")
    for name in ("PORT", "BENCH_SQL_LOG"):
        env.pop(name, None)
    keys = ("DATABASE_URL", "GAIA_INSTANCE_PATH", "REDIS_URL", "AUTH_CACHE_TTL")
    spec = {"n": n, "apps": [
        {"name": g.server.name, "key": g.identity.key, "jwt": g.identity.jwt,
         # Everything that differs between the servers; "" leaves a setting at its default.
         "overrides": {k: g.env.get(k, "") for k in keys}}
        for g in gaias]}
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_inprocess",
                                json.dumps(spec)], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=timeout)
    if completed.returncode != 0:
        raise RuntimeError(f"in-process timings failed:\n"
                           f"{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Part 2: revocation across workers


class AccessLog:
    """Follows a gunicorn log with PROBE_LOG_FORMAT lines: probe id -> (worker pid, status)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.probes: dict[str, tuple[int, int]] = {}

    def update(self) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # complete lines only
        self.offset += end
        for pid, status, probe in PROBE_LINE_RE.findall(data[:end].decode(errors="replace")):
            self.probes[probe] = (int(pid), int(status))


class Poller:
    """`threads` threads, each sending GET with one key on a new connection, paced so that
    together they send about `rate` requests per second. Records (sent, answered, status)."""

    def __init__(self, port: int, key: str, prefix: str, rate: float = 200.0,
                 threads: int = 4) -> None:
        self.port, self.key, self.prefix = port, key, prefix
        self.interval = threads / rate
        self.records: dict[str, tuple[float, float, int | str]] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self):
        for index, thread in enumerate(self._threads):
            thread.start()
            time.sleep(self.interval / len(self._threads))  # spread the threads' phases
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                probe = f"{self.prefix}{self._count}"
                self._count += 1
            sent = time.time()
            try:
                status: int | str = call(self.port, "GET", MODELS_PATH, timeout=5,
                                         headers={"X-API-Key": self.key, "X-Probe": probe})[0]
            except Exception as exc:  # noqa: BLE001  (recorded as an unexpected answer)
                status = type(exc).__name__
            self.records[probe] = (sent, time.time(), status)
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()


@dataclass
class Repetition:
    index: int
    revoke_sent: float
    revoke_answered: float
    revoke_worker: int | None
    all_refused_after_s: float | None  # DELETE answered -> last worker's first 401
    per_worker: dict[int, dict] = field(default_factory=dict)
    requests: int = 0
    other_statuses: dict[str, int] = field(default_factory=dict)
    served_after_refusal: int = 0  # 200s a worker gave after it had refused the key
    # Polls sent after the DELETE had answered that were still served (200), and the latest
    # such send, relative to the DELETE's answer: how long the revoked key kept working.
    served_after_answer: int = 0
    last_served_sent_after_answer_s: float | None = None


def revocation_run(gaia: GaiaServer, workers: int, repetitions: int, rate: float,
                   limit_s: float) -> list[Repetition]:
    server, ident = gaia.server, gaia.identity
    access = AccessLog(server.log_path)
    pids = set(server.workers())
    if len(pids) != workers:
        raise RuntimeError(f"{server.name}: expected {workers} workers, found {sorted(pids)}")
    results = []
    for rep in range(1, repetitions + 1):
        made = call_json(server.port, "POST", f"{API}/keys", 201, headers=ident.bearer,
                         body={"name": f"revoke-me-{rep}", "expires_at": _in_a_month()})
        prefix = f"r{rep}-"
        with Poller(server.port, made["key"], prefix, rate=rate) as poller:
            deadline = time.monotonic() + 10
            while True:  # every worker has served (and cached) the key
                access.update()
                served = {pid for probe, (pid, status) in access.probes.items()
                          if probe.startswith(prefix) and status == 200}
                if served >= pids:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name}: the new key reached only workers "
                                       f"{sorted(served)} of {sorted(pids)} in 10 s")
                time.sleep(0.02)
            time.sleep(random.uniform(0.0, 1.0))  # a random phase against the cache's TTL
            revoke_probe = f"del-{rep}"
            revoke_sent = time.time()
            status, body = call(server.port, "DELETE", f"{API}/keys/{made['id']}",
                                headers=dict(ident.bearer, **{"X-Probe": revoke_probe}))
            revoke_answered = time.time()
            if status != 204:
                raise RuntimeError(f"DELETE /keys/{made['id']} answered {status}: {body[:300]!r}")
            deadline = revoke_answered + limit_s
            while time.time() < deadline:
                access.update()
                refused = {pid for probe, (pid, st) in access.probes.items()
                           if probe.startswith(prefix) and st == 401
                           and poller.records.get(probe, (0,))[0] >= revoke_sent}
                if refused >= pids:
                    break
                time.sleep(0.02)
            time.sleep(0.15)  # a few more answers, to see that refusals stay
        time.sleep(0.05)
        access.update()

        per_worker: dict[int, dict] = {}
        other: dict[str, int] = {}
        served_after_refusal = 0
        mine = [(probe, rec) for probe, rec in poller.records.items()]
        for pid in sorted(pids):
            records = sorted((rec for probe, rec in mine
                              if access.probes.get(probe, (None,))[0] == pid),
                             key=lambda r: r[1])
            after = [r for r in records if r[0] >= revoke_sent]
            refusals = [r[1] for r in after if r[2] == 401]
            first_401 = min(refusals) if refusals else None
            served = [r for r in after if r[2] == 200]
            if first_401 is not None:
                served_after_refusal += sum(1 for r in served if r[0] > first_401)
            per_worker[pid] = {
                "requests_after_revoke": len(after),
                "first_401_after_answer_s": (first_401 - revoke_answered) if first_401 else None,
                "last_200_answered_after_answer_s": (max(r[1] for r in served) - revoke_answered
                                                     if served else None),
            }
        late = [rec for _, rec in mine if rec[2] == 200 and rec[0] >= revoke_answered]
        for _, rec in mine:
            if rec[2] not in (200, 401):
                other[str(rec[2])] = other.get(str(rec[2]), 0) + 1
        firsts = [w["first_401_after_answer_s"] for w in per_worker.values()]
        all_refused = max(firsts) if all(f is not None for f in firsts) else None
        access.update()
        repetition = Repetition(rep, revoke_sent, revoke_answered,
                                access.probes.get(revoke_probe, (None,))[0], all_refused,
                                per_worker, len(mine), other, served_after_refusal,
                                len(late), max((r[0] for r in late), default=revoke_answered)
                                - revoke_answered if late else None)
        results.append(repetition)
        log(f"{server.name} revocation {rep}: every worker refused "
            + (f"{all_refused * 1000:+.1f} ms" if all_refused is not None else "NOT within the limit")
            + f" after the DELETE answered ({repetition.requests} polls, "
            f"{repetition.served_after_answer} served after it; revoked by worker "
            f"{repetition.revoke_worker}; per worker: "
            + ", ".join(f"{pid}: {w['first_401_after_answer_s'] * 1000:+.1f} ms"
                        if w["first_401_after_answer_s"] is not None else f"{pid}: never"
                        for pid, w in per_worker.items()) + ")")
    return results


def summarize_revocations(reps: list[Repetition]) -> dict:
    times = [r.all_refused_after_s for r in reps]
    done = [t for t in times if t is not None]
    per_worker_polls = [w["requests_after_revoke"] for r in reps for w in r.per_worker.values()]
    return {
        "repetitions": len(reps),
        "completed": len(done),
        "median_s": statistics.median(done) if done else None,
        "max_s": max(done) if len(done) == len(times) and done else None,
        "min_s": min(done) if done else None,
        "served_after_refusal": sum(r.served_after_refusal for r in reps),
        "served_after_answer": sum(r.served_after_answer for r in reps),
        "max_last_served_sent_after_answer_s": max(
            (r.last_served_sent_after_answer_s for r in reps
             if r.last_served_sent_after_answer_s is not None), default=None),
        "other_statuses": {k: sum(r.other_statuses.get(k, 0) for r in reps)
                           for k in {k for r in reps for k in r.other_statuses}},
        "polls": sum(r.requests for r in reps),
        "median_polls_per_worker_after_revoke": statistics.median(per_worker_polls)
        if per_worker_polls else None,
    }


# --------------------------------------------------------------------------------------------
# Main


def gaia_env(base_env: dict[str, str], database_url: str, instance: Path, *, workers: int,
             ttl: float | None, redis_url: str | None, rate_limit: str,
             access_log: bool = False) -> dict[str, str]:
    env = dict(base_env, DATABASE_URL=database_url, ENVIRONMENT="local",
               GAIA_INSTANCE_PATH=str(instance), RATE_LIMIT_DEFAULT=rate_limit,
               AUTH_RATE_LIMIT=rate_limit, WEB_CONCURRENCY=str(workers))
    if ttl is not None:
        env["AUTH_CACHE_TTL"] = str(ttl)
    if redis_url:
        env["REDIS_URL"] = redis_url
    if access_log:
        env["GAIA_ACCESS_LOG"] = "1"
        env["GUNICORN_CMD_ARGS"] = f"--access-logformat '{PROBE_LOG_FORMAT}'"
    return env


def _ms(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None or value != value else f"{value * 1000:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per round (2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target and concurrency (3)")
    parser.add_argument("--concurrency", default="8,1", help="comma list, measured in turn (8,1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, part 1 (2)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per target (1)")
    parser.add_argument("--mixed-duration", type=float, default=5.0,
                        help="seconds of interleaved load per server and concurrency (5)")
    parser.add_argument("--inprocess-calls", type=int, default=2000,
                        help="calls per in-process measurement (2000)")
    parser.add_argument("--revoke-workers", type=int, default=3, help="gunicorn workers, part 2 (3)")
    parser.add_argument("--revocations", type=int, default=10, help="repetitions per setting (10)")
    parser.add_argument("--poll-rate", type=float, default=200.0,
                        help="requests per second while polling a key (200)")
    parser.add_argument("--revoke-limit", type=float, default=5.0,
                        help="seconds to wait for every worker to refuse a revoked key (5)")
    parser.add_argument("--redis-url", type=_loopback_url, default=None,
                        help="also measure Gaia with REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    parser.add_argument("--rate-limit", default=BENCH_AUTH_RATE_LIMIT,
                        help=f"RATE_LIMIT_DEFAULT and AUTH_RATE_LIMIT ({BENCH_AUTH_RATE_LIMIT})")
    parser.add_argument("--stats-settle", type=float, default=STATS_SETTLE_S,
                        help="seconds to wait for PostgreSQL's counters before each read "
                        f"({STATS_SETTLE_S:g})")
    parser.add_argument("--pg-url", type=_loopback_url,
                        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help=f"maintenance database URL on 127.0.0.1 ({DEFAULT_PG_URL})")
    parser.add_argument("--skip", action="append", default=[], choices=["cost", "inprocess", "revocation"],
                        help="leave out a part (repeatable)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results (default bench/results/auth-<time>.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the gunicorn logs dir")
    parser.add_argument("--time-limit", type=float, default=360.0,
                        help="hard bound on the run in seconds; then it cleans up and exits 130 "
                        "(360)")
    parser.add_argument("--_inprocess", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._inprocess is not None:
        print(json.dumps(inprocess_child(json.loads(args._inprocess))))
        return 0

    concurrencies = [int(c) for c in str(args.concurrency).replace(" ", "").split(",") if c]
    if args.rounds < 1 or args.duration <= 0 or not concurrencies or min(concurrencies) < 1:
        parser.error("rounds, duration and concurrency must be positive")

    install_signal_handlers(signal.SIGALRM)
    if args.time_limit > 0:
        signal.setitimer(signal.ITIMER_REAL, args.time_limit)

    started_at = datetime.now(timezone.utc)
    t_start = time.monotonic()
    revision = git_revision()
    workdir = Path(tempfile.mkdtemp(prefix="gaia-bench-auth-"))
    exit_code = 1
    report: dict = {"started_at": started_at.isoformat(), "gaia_revision": revision,
                    "settings": {k: v for k, v in vars(args).items() if k != "_inprocess"}}
    report["settings"]["output"] = str(args.output) if args.output else None
    problems: list[str] = []
    with ExitStack() as cleanup:
        try:
            idle = background_cores()
            log(f"background load before start: {idle:.2f} of {os.cpu_count()} cores busy")
            report["machine"] = {"cores": os.cpu_count(), "background_cores_busy": idle,
                                 "platform": platform.platform(),
                                 "python": platform.python_version()}
            base_env = clean_environment()
            base_env.update(HOST="127.0.0.1", GUNICORN_WORKER_CLASS="sync", GUNICORN_THREADS="1")

            # Databases: one migrated template, one copy per server.
            template = BenchDatabase(args.pg_url)
            template.create()
            cleanup.callback(template.drop)
            run_cli(gaia_env(base_env, template.url, workdir / "template", workers=1, ttl=None,
                             redis_url=None, rate_limit=args.rate_limit), "db", "upgrade")
            log(f"migrated template database {template.name}")

            def new_gaia(name: str, *, workers: int, ttl: float | None, redis: bool,
                         access_log: bool = False, sql_log: bool = False) -> GaiaServer:
                database = CopiedDatabase(args.pg_url, template.name)
                database.create()
                cleanup.callback(database.drop)
                env = gaia_env(base_env, database.url, workdir / name, workers=workers, ttl=ttl,
                               redis_url=args.redis_url if redis else None,
                               rate_limit=args.rate_limit, access_log=access_log)
                if sql_log:
                    env["BENCH_SQL_LOG"] = str(workdir / f"{name}.sql.log")
                port = free_port()
                env["PORT"] = str(port)
                server = Server(name, APP_TARGET, env, port, workdir / f"{name}.log")
                settings = (f"{workers} workers, AUTH_CACHE_TTL="
                            + (f"{ttl:g}" if ttl is not None else
                               "default (60 s)" if redis else "default (1 s)")
                            + (f", REDIS_URL={args.redis_url}" if redis else ", no Redis"))
                return GaiaServer(server, database, env, settings)

            stopped: set[str] = set()

            def stop(server: Server) -> None:
                if server.name not in stopped:
                    stopped.add(server.name)
                    server.stop()

            def start_all(gaias: list[GaiaServer], workers: int) -> None:
                for g in gaias:
                    cleanup.callback(stop, g.server)
                    g.server.start()
                for g in gaias:
                    wait_ready(g.server, workers)
                    g.identity = sign_up(g.server.port, g.server.name)
                log("servers ready; users signed up, keys made: "
                    + ", ".join(g.server.name for g in gaias))

            # ---------------------------------------------------------------- part 1
            if "cost" not in args.skip or "inprocess" not in args.skip:
                gaias = [new_gaia("ttl60", workers=args.workers, ttl=60.0, redis=False,
                                  sql_log=True),
                         new_gaia("ttl1", workers=args.workers, ttl=None, redis=False,
                                  sql_log=True)]
                if args.redis_url:
                    gaias.append(new_gaia("redis", workers=args.workers, ttl=None, redis=True,
                                          sql_log=True))
                start_all(gaias, args.workers)
                by_name = {g.server.name: g for g in gaias}

                targets: list[Target] = []
                for g in gaias:
                    kinds = ("key", "jwt") if g.server.name == "ttl1" else ("open", "key", "jwt")
                    for kind in kinds:
                        targets.append(Target(f"{g.server.name} {kind}", kind, g,
                                              OPEN_PATH if kind == "open" else AUTH_PATH))
                if "redis" in by_name:
                    # A key with its own high limit: the limiter's batched path (see above).
                    g = by_name["redis"]
                    admin_key = create_admin_key(g.env, "bench-admin@gaia.dev")
                    high = call_json(g.server.port, "POST", f"{API}/keys", 201,
                                     headers={"X-API-Key": admin_key},
                                     body={"name": "bench-high-limit", "rate_limit": HIGH_KEY_LIMIT})
                    targets.append(Target("redis key, high limit", "key", g, AUTH_PATH,
                                          key=high["key"]))
                open_of = {t.label: (f"{t.gaia.server.name} open"
                                     if t.gaia.server.name != "ttl1" else "ttl60 open")
                           for t in targets}

                # The bodies must be the same, byte for byte, on every route.
                g0 = by_name["ttl60"]
                bodies = {
                    "open": call(g0.server.port, "GET", OPEN_PATH),
                    "auth, key": call(g0.server.port, "GET", AUTH_PATH,
                                      headers={"X-API-Key": g0.identity.key}),
                    "auth, jwt": call(g0.server.port, "GET", AUTH_PATH, headers=g0.identity.bearer),
                    "GET /api/v0.2/models, key": call(g0.server.port, "GET", MODELS_PATH,
                                                      headers={"X-API-Key": g0.identity.key}),
                }
                if {status for status, _ in bodies.values()} != {200} or \
                        len({body for _, body in bodies.values()}) != 1:
                    raise RuntimeError(f"the routes do not return the same body: {bodies}")
                log(f"all routes return the same {len(bodies['open'][1])}-byte body")

            if "cost" not in args.skip:
                for t in targets:
                    warm = run_load(t.gaia.server.base_url + t.path, concurrency=max(concurrencies),
                                    duration=args.warmup, headers=t.headers)
                    if warm.errors:
                        raise RuntimeError(f"warm-up of {t.label} had errors: {warm.summary()}")
                redis_pids = redis_server_pids() if args.redis_url else []
                log(f"waiting {args.stats_settle:g} s for PostgreSQL's counters to settle")
                before = {g.server.name: g.database.stats(
                    flush_wait=args.stats_settle if i == 0 else 0) for i, g in enumerate(gaias)}
                measured_from = time.monotonic()
                measured_from_wall = time.time()
                rounds: list[AuthRound] = []
                summaries: dict[tuple[str, int], Summary] = {}
                for c in concurrencies:
                    for t in targets:
                        summaries[(t.label, c)] = Summary(t.label, c)
                    for index in range(1, args.rounds + 1):
                        shift = (index - 1) % len(targets)
                        for t in targets[shift:] + targets[:shift]:
                            r = measure_target(t, c, args.duration, index, redis_pids)
                            rounds.append(r)
                            summaries[(t.label, c)].rounds.append(r)
                        log(f"c={c} round {index}/{args.rounds}: " + ", ".join(
                            f"{t.label} {summaries[(t.label, c)].rounds[-1].result.p50_ms:.3f} ms"
                            for t in targets))
                    for t in targets:
                        summaries[(t.label, c)].rounds.sort(key=lambda r: r.index)
                # Interleaved: open and authenticated requests mixed on one server, per server.
                mixed: dict[tuple[str, int], dict] = {}
                for c in concurrencies:
                    for g in gaias:
                        kinds = [("open", OPEN_PATH, {})] + [
                            (t.label.split(" ", 1)[1], t.path, t.headers) for t in targets
                            if t.gaia is g and t.kind != "open"]
                        m = run_mixed(g.server.port, kinds, c, args.mixed_duration)
                        mixed[(g.server.name, c)] = m
                        log(f"interleaved c={c} {g.server.name}: " + ", ".join(
                            f"{k} p50 {v['p50_ms']:.3f} ms (n={v['n']})"
                            for k, v in m["kinds"].items())
                            + (f"; errors {m['errors']}" if m["errors"] else ""))
                measured_s = time.monotonic() - measured_from
                measured_to_wall = time.time()
                log(f"waiting {args.stats_settle:g} s for PostgreSQL's counters to settle")
                after = {g.server.name: g.database.stats(
                    flush_wait=args.stats_settle if i == 0 else 0) for i, g in enumerate(gaias)}
                for g in gaias:
                    if g.server.proc.poll() is not None:
                        raise RuntimeError(f"{g.server.name} died:\n{g.server.log_tail()}")

                table, rows = render_cost_table(targets, summaries, concurrencies, open_of)
                db_rows = []
                for g in gaias:
                    name = g.server.name
                    delta = {k: after[name][k] - before[name][k] for k in before[name]
                             if k != "numbackends"}
                    xacts = delta["xact_commit"] + delta["xact_rollback"]
                    authed = sum(s.ok + s.errors for (label, _), s in summaries.items()
                                 if label.startswith(name + " ") and not label.endswith(" open"))
                    authed += sum(v["n"] for (n_, _), m in mixed.items() if n_ == name
                                  for k, v in m["kinds"].items() if k != "open")
                    authed_s = sum(r.result.elapsed_s for r in rounds
                                   if r.target.startswith(name + " ")
                                   and not r.target.endswith(" open"))
                    authed_s += sum(m["elapsed_s"] for (n_, _), m in mixed.items() if n_ == name)
                    app_sql = sql_log_counts(Path(g.env["BENCH_SQL_LOG"]), measured_from_wall,
                                             measured_to_wall)
                    db_rows.append({"server": name, "settings": g.settings, "delta": delta,
                                    "app_statements": app_sql,
                                    "transactions": xacts, "authenticated_requests": authed,
                                    "authenticated_load_s": authed_s,
                                    "per_1000": xacts / authed * 1000 if authed else None,
                                    "per_s_of_auth_load": xacts / authed_s if authed_s else None,
                                    "per_s_of_run": xacts / measured_s})
                mixed_rows = []
                for (name, c), m in mixed.items():
                    base = m["kinds"]["open"]
                    for kind, v in m["kinds"].items():
                        row = {"server": name, "concurrency": c, "kind": kind, **v}
                        if kind != "open":
                            row["added_p50_ms"] = v["p50_ms"] - base["p50_ms"]
                            row["added_p50_ms_by_slice"] = [a - b for a, b in zip(
                                v["p50_ms_by_slice"], base["p50_ms_by_slice"])]
                            row["added_mean_ms"] = v["mean_ms"] - base["mean_ms"]
                        mixed_rows.append(row)
                report["cost"] = {"summary": rows, "database": db_rows, "measured_s": measured_s,
                                  "interleaved": mixed_rows,
                                  "servers": {g.server.name: g.settings for g in gaias},
                                  "rounds": [dict(r.row(), redis_cpu_s=r.redis_cpu_s)
                                             for r in rounds]}
                print()
                print(f"## 1. Cost of authentication — Gaia {revision}, {APP_TARGET}, gunicorn "
                      f"sync x {args.workers} workers per server; {args.rounds} rounds x "
                      f"{args.duration:g} s per target and concurrency, targets alternated; "
                      f"medians over rounds; {started_at:%Y-%m-%d %H:%M} UTC; "
                      f"{os.cpu_count()} cores, {idle:.2f} busy before start")
                for g in gaias:
                    print(f"- {g.server.name}: {g.settings}")
                print()
                print(table)
                print()
                print("¹ against the open route of ttl60 (another server with the same settings "
                      "except AUTH_CACHE_TTL, which the open route does not use).")
                print()
                print("| server | transactions (commit + rollback) | tup_fetched | tup_updated "
                      "| authenticated requests | per 1000 auth. requests | per s of auth. load "
                      "| what the app sent (checkouts = pre-pings; statements) |")
                print("|---|---:|---:|---:|---:|---:|---:|---|")
                for d in db_rows:
                    sent = ", ".join(f"{n} {k}" for k, n in sorted(d["app_statements"].items())) \
                        or "nothing"
                    print(f"| {d['server']} | {d['transactions']} ({d['delta']['xact_commit']} + "
                          f"{d['delta']['xact_rollback']}) | {d['delta']['tup_fetched']} "
                          f"| {d['delta']['tup_updated']} | {d['authenticated_requests']} "
                          f"| {d['per_1000']:.2f} | {d['per_s_of_auth_load']:.2f} | {sent} |")
                print(f"(over {measured_s:.0f} s of measured rounds, the interleaved runs included)")
                print()
                print(f"Interleaved ({args.mixed_duration:g} s per server and concurrency; each "
                      "connection cycles open, key, jwt[, key with a high limit] on one server):")
                print()
                print("| conc. | server | target | requests | p50 ms | p99 ms | added p50 ms "
                      "(in each third of the run) | added mean ms |")
                print("|---:|---|---|---:|---:|---:|---:|---:|")
                for row in mixed_rows:
                    added = ("—" if row["kind"] == "open" else
                             f"**{row['added_p50_ms']:+.3f}** (" + ", ".join(
                                 f"{x:+.3f}" for x in row["added_p50_ms_by_slice"]) + ")")
                    mean = "—" if row["kind"] == "open" else f"{row['added_mean_ms']:+.3f}"
                    print(f"| {row['concurrency']} | {row['server']} | {row['kind']} | {row['n']} "
                          f"| {row['p50_ms']:.3f} | {row['p99_ms']:.2f} | {added} | {mean} |")
                print()
                print("Per round:")
                print(render_rounds(rounds))
                print()
                for row in mixed_rows:
                    if row["kind"] != "open":
                        verdict = ("meets" if row["added_p50_ms"] < TARGET_ADDED_P50_MS
                                   else "MISSES")
                        print(f"c={row['concurrency']} {row['server']} {row['kind']} "
                              f"(interleaved): adds {row['added_p50_ms']:+.3f} ms p50 -> {verdict} "
                              f"the {TARGET_ADDED_P50_MS} ms target")

            # ---------------------------------------------------------------- part 1b
            if "inprocess" not in args.skip:
                for g in gaias:  # stop the load servers first: the CPU is then the child's
                    stop(g.server)
                log("in-process timings (one child process, one app per server's settings)")
                inproc = run_inprocess([g for g in gaias if g.server.name != "ttl1"],
                                       args.inprocess_calls)
                report["inprocess"] = inproc
                print()
                print("## 1b. In-process (no gunicorn, no network), best of 3 by CPU; µs per call")
                names = list(inproc)
                print("| call | " + " | ".join(f"{n}: CPU | {n}: wall" for n in names) + " |")
                print("|---|" + "---:|---:|" * len(names))
                labels = list(inproc[names[0]]["wsgi"]) + list(inproc[names[0]]["pieces"])
                for label in labels:
                    cells = []
                    for n in names:
                        v = inproc[n]["wsgi"].get(label) or inproc[n]["pieces"].get(label)
                        cells.append(f"{v['cpu_us']:.1f} | {v['wall_us']:.1f}")
                    print(f"| {label} | " + " | ".join(cells) + " |")
                for n in names:
                    if inproc[n].get("profile_auth_route_key"):
                        report.setdefault("profiles", {})[n] = inproc[n]["profile_auth_route_key"]
                    w = inproc[n]["wsgi"]
                    print(f"{n}: require_auth adds {w['auth route, API key']['cpu_us'] - w['open route']['cpu_us']:.1f} µs CPU "
                          f"(key) and {w['auth route, JWT']['cpu_us'] - w['open route']['cpu_us']:.1f} µs (JWT) per "
                          f"WSGI call; wall {w['auth route, API key']['wall_us'] - w['open route']['wall_us']:.1f} / "
                          f"{w['auth route, JWT']['wall_us'] - w['open route']['wall_us']:.1f} µs")

            # ---------------------------------------------------------------- part 2
            if "revocation" not in args.skip:
                if "cost" not in args.skip or "inprocess" not in args.skip:
                    for g in gaias:
                        stop(g.server)
                revs = [new_gaia("revoke-local", workers=args.revoke_workers, ttl=None,
                                 redis=False, access_log=True)]
                if args.redis_url:
                    revs.append(new_gaia("revoke-redis", workers=args.revoke_workers, ttl=None,
                                         redis=True, access_log=True))
                start_all(revs, args.revoke_workers)
                time.sleep(0.5)
                revocation = {}
                for g in revs:
                    reps = revocation_run(g, args.revoke_workers, args.revocations,
                                          args.poll_rate, args.revoke_limit)
                    summary = summarize_revocations(reps)
                    revocation[g.server.name] = {
                        "settings": g.settings, "summary": summary,
                        "repetitions": [r.__dict__ for r in reps]}
                    if summary["served_after_refusal"]:
                        problems.append(f"{g.server.name}: {summary['served_after_refusal']} "
                                        "requests served after the same worker had refused the key")
                    if summary["completed"] < summary["repetitions"]:
                        problems.append(f"{g.server.name}: in {summary['repetitions'] - summary['completed']}"
                                        f" repetitions some worker still served the key "
                                        f"{args.revoke_limit:g} s after the revoke")
                    if summary["other_statuses"]:
                        problems.append(f"{g.server.name}: unexpected answers while polling: "
                                        f"{summary['other_statuses']}")
                report["revocation"] = revocation
                print()
                print(f"## 2. Revocation across {args.revoke_workers} workers: DELETE answered -> "
                      f"every worker refuses (first 401 of the last worker); polling "
                      f"~{args.poll_rate:g} req/s on new connections")
                print("| server | settings | repetitions | median ms | max ms | min ms "
                      "| polls per worker after revoke (median) | polls sent after the DELETE "
                      "answered and still served (all reps; latest sent at) "
                      "| served after the worker refused |")
                print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
                for name, data in revocation.items():
                    s = data["summary"]
                    print(f"| {name} | {data['settings']} | {s['completed']}/{s['repetitions']} "
                          f"| {_ms(s['median_s'])} | {_ms(s['max_s'])} | {_ms(s['min_s'])} "
                          f"| {s['median_polls_per_worker_after_revoke']} "
                          f"| {s['served_after_answer']} (+{_ms(s['max_last_served_sent_after_answer_s'])} ms) "
                          f"| {s['served_after_refusal']} |")

            report["problems"] = problems
            report["elapsed_s"] = time.monotonic() - t_start
            output = write_results(results_path(args.output, "auth", started_at), report)
            print()
            for p in problems:
                print(f"PROBLEM: {p}")
            log(f"results written to {output}; {report['elapsed_s']:.0f} s in all")
            errors = sum(r["errors"] for r in report.get("cost", {}).get("summary", []))
            exit_code = 0 if errors == 0 and not problems else 2
        except (KeyboardInterrupt, Interrupted) as exc:
            exit_code = interrupted(exc)
        except Exception as exc:
            log(f"failed: {type(exc).__name__}: {exc}")
            exit_code = 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    remove_workdir(workdir, args.keep_logs)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
