"""Gaia's chat path against the floor of a Flask gateway and the mock provider itself, in one run.

Run from the repository root with the project's virtualenv (see bench/README.md, "Chat"):

    .venv/bin/python bench/bench_chat.py                       # ~8 min, the default run
    .venv/bin/python bench/bench_chat.py --short               # ~3 min: c=1 and 8, no streams/db/hold
    .venv/bin/python bench/bench_chat.py --no-redis            # Gaia without REDIS_URL
    .venv/bin/python bench/bench_chat.py --worker-class sync   # both servers on sync workers
    .venv/bin/python bench/bench_chat.py --profile 2000 --skip rounds,streams,hold,db
    .venv/bin/python bench/bench_chat.py --also-root old=/tmp/gaia-old   # two checkouts side by side

What it starts, each as its own process (so that each one's CPU can be read from /proc):
  - bench/mock_llm.py: a zero-delay OpenAI-compatible server on 127.0.0.1 (the "provider");
  - bench/floor_proxy.py under gunicorn: a minimal Flask app that checks a key in a dict and
    forwards the body with a pooled requests.Session (the floor of any Flask gateway);
  - Gaia (`wsgi:app`) under gunicorn, on a fresh PostgreSQL database gaia_bench_<random>
    (migrated with `flask db upgrade`; admin key from `flask create-admin`), REDIS_URL set
    unless --no-redis, RATE_LIMIT_DEFAULT raised out of the way (the limiter still runs),
    OPENAI_API_KEY=sk-bench and OPENAI_BASE_URL=http://127.0.0.1:<mock>/v1.
Both gunicorn servers: `python -m gunicorn -c gunicorn.conf.py <app>`, the same clean
environment, WEB_CONCURRENCY=2, the default worker class (gevent) unless --worker-class.

What it measures (load from bench/loadgen.py in this process, keep-alive connections):
  1. rounds: non-streamed chat at c=1, 8 and 32, in alternating rounds (every target in turn,
     the order rotated each round): the mock directly; the floor (POST /v1/chat/completions);
     Gaia POST /v1/chat/completions; Gaia POST /api/v0.2/chat, a new conversation per request;
     Gaia POST /api/v0.2/chat continuing a conversation (one per connection); "/v1 with tools"
     (unless --no-tools): the mock, the floor and Gaia's /v1 with a body declaring three
     function tools with JSON Schema parameters, answered by a tool call (mock_tools,
     floor_tools, gaia_v1_tools: Gaia's ratios for it are taken against floor_tools and its
     added latency over mock_tools). Per target: p50,
     p99, req/s, CPU per request of the server's processes (gunicorn master + workers), of the
     mock, of the PostgreSQL backends serving the bench database, of redis-server and of the
     load generator; the added latency = the target's p50/p99 minus the mock's in the same
     round; Gaia/floor ratios of added latency and of CPU.
  2. streams: the same, streamed, at c=1 and 8: time to the first content event (the first
     `data:` line with non-empty content; for the tools targets, the first piece of the tool
     call's arguments) and to the end, for the mock, the floor and both of Gaia's endpoints.
  3. db: pg_stat_database around a fixed number of requests of each Gaia kind: transactions
     and rows per request.
  4. hold: 500 streams of the slow model (the mock waits --hold-delay s before the first
     token) opened at once against Gaia (and the floor), while c=4 normal requests keep going:
     how many streams opened and completed, keep-alive comments, the mock's count of requests
     waiting at once, the normal requests' p50/p99 during the hold against just before it,
     and the RSS of the workers.
  5. --profile N (off by default): N calls of each kind in one child process (the app as a
     WSGI callable, no gunicorn), CPU per call, and cProfile of Gaia's two chat routes.

--also-root NAME=PATH (repeatable) puts one more Gaia, `wsgi:app` of the checkout at PATH
(gunicorn, `flask db upgrade` and `flask create-admin` run with cwd=PATH), into the same rounds:
the same environment, Redis and gunicorn settings as `gaia`, its own fresh database (so its
PostgreSQL CPU and counters are its own), its own key and conversations. Its targets are
NAME_v1, NAME_chat_new, NAME_chat_cont, NAME_v1_stream, NAME_chat_stream, each measured next to
gaia's counterpart; the order rotates each round and is reversed every other round. The tables
gain gaia/NAME ratios (added latency, CPU per request, req/s; first content for streams), with
the min–max of the same ratio paired round by round. The db phase covers it too, and the hold
when --hold-targets names it.

It prints tables and verdicts against the targets, and writes JSON to bench/results/.
Everything it starts is stopped, and the database dropped, on exit, on failure and on
Ctrl-C/SIGTERM. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __name__ == "__main__" and sys.argv[1:] == ["--profile-child"] and os.environ.get("BENCH_PROFILE_GEVENT"):
    # The profile child patches like gunicorn's gevent worker does, before anything (psycopg,
    # requests, threading users) is imported.
    from gevent import monkey

    monkey.patch_all()

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BENCH_RATE_LIMIT,
    CLK_TCK,
    DEFAULT_PG_URL,
    BenchDatabase,
    Interrupted,
    RoundTotals,
    Server,
    _cpu_seconds,
    _loopback_url,
    _machine_jiffies,
    _stat_fields,
    background_cores,
    clean_environment,
    free_port,
    git_revision,
    install_signal_handlers,
    interrupted,
    log,
    log_server_tails,
    migrate_and_key,
    redis_server_pids,
    remove_workdir,
    results_path,
    wsgi_caller,
    write_results,
)
from bench.loadgen import LoadResult, percentile, run_load, run_load_async  # noqa: E402

API = "/api/v0.2"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"
MODEL = "gpt-4o-mini"
SLOW_MODEL = "slow"
UPSTREAM_KEY = "sk-bench"
FLOOR_KEY = "floor-bench-key"
QUESTION = "Say hello in five words."
STATS_SETTLE_S = 11.0  # see bench_auth.py: PostgreSQL 15 may publish a backend's counters 10 s late

# The first SSE event with non-empty content: `"content":"` followed by anything but `"`.
# The role chunk (`"content":""`) does not match. Mock, floor and Gaia all write compact JSON.
CONTENT_MARKER = rb'"content":"[^"]'
# A streamed tool call: the first piece of its arguments.
ARGUMENTS_MARKER = rb'"arguments":"[^"]'
KEEPALIVE_MARKER = rb"(?m)^: keepalive"
DONE_MARKER = rb"data: \[DONE\]"

# The targets.
TARGET_C1_ADDED_P50_MS = 2.0
TARGET_C1_ADDED_P99_MS = 5.0
TARGET_ADDED_RATIO = 1.5
TARGET_CPU_RATIO = 2.0
# "OpenAI-compatible API with full fidelity": /v1 (with and without tools) within 1.5× the
# floor's CPU per request and added p50 at c=1 and 8; the chat API within 2× the floor's CPU.
TARGET_V1_RATIO = 1.5
TARGET_TTFB_RATIO = 1.5
TARGET_OPEN_STREAMS = 500

PHASES = ("rounds", "streams", "db", "hold")


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


OPENAI_BODY = _dumps({"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]})
OPENAI_STREAM_BODY = _dumps({"model": MODEL, "messages": [{"role": "user", "content": QUESTION}],
                             "stream": True, "stream_options": {"include_usage": True}})
# "/v1 with tools": what an agent framework sends, three function tools with JSON Schema
# parameters; the mock answers with a call of the first (bench/mock_llm.py).
TOOLS_QUESTION = "What is the weather in Paris tomorrow, in celsius?"
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather forecast for a city on a day.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Paris"},
            "day": {"type": "string", "description": "ISO date, or today / tomorrow"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        }, "required": ["city", "unit"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "search_flights", "description": "Flights between two airports on a date.",
        "parameters": {"type": "object", "properties": {
            "origin": {"type": "string", "minLength": 3, "maxLength": 3},
            "destination": {"type": "string", "minLength": 3, "maxLength": 3},
            "date": {"type": "string", "format": "date"},
            "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
            "cabin": {"type": "string", "enum": ["economy", "premium", "business", "first"]},
        }, "required": ["origin", "destination", "date"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "create_reminder", "description": "Remind the user of something at a time.",
        "parameters": {"type": "object", "properties": {
            "text": {"type": "string", "maxLength": 500},
            "at": {"type": "string", "format": "date-time"},
            "repeat": {"type": ["string", "null"], "enum": ["daily", "weekly", None]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
        }, "required": ["text", "at"], "additionalProperties": False}}},
]
OPENAI_TOOLS_BODY = _dumps({"model": MODEL, "messages": [{"role": "user", "content": TOOLS_QUESTION}],
                            "tools": TOOLS, "tool_choice": "auto"})
OPENAI_TOOLS_STREAM_BODY = _dumps({"model": MODEL, "messages": [{"role": "user", "content": TOOLS_QUESTION}],
                                   "tools": TOOLS, "tool_choice": "auto", "stream": True,
                                   "stream_options": {"include_usage": True}})
CHAT_BODY = _dumps({"message": QUESTION, "model": MODEL})
CHAT_STREAM_BODY = _dumps({"message": QUESTION, "model": MODEL, "stream": True})


# --------------------------------------------------------------------------------------------
# Processes


class MockServer(Server):
    """bench/mock_llm.py as its own process; `Server`'s readiness, CPU and stop apply."""

    first_token_delay: float = 10.0

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "mock_llm.py"), "--port", str(self.port),
             "--first-token-delay", str(self.first_token_delay), "--slow-model", SLOW_MODEL],
            cwd=ROOT, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log(f"started {self.name} (bench/mock_llm.py) on {self.base_url}, pid {self.proc.pid}")

    def stats(self, reset: bool = False) -> dict:
        url = self.base_url + "/stats" + ("?reset=1" if reset else "")
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())


class GaiaServer(Server):
    """`Server`, run from another checkout of Gaia when --gaia-root says so."""

    cwd: Path = ROOT

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app],
            cwd=self.cwd, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log(f"started {self.name} ({self.app} in {self.cwd}) on {self.base_url}, master pid {self.proc.pid}")


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise this process's open-file limit (children inherit it: servers and mock)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class PgBackends:
    """What PostgreSQL spends for the bench database.

    - The backends connected to it: pids from pg_stat_activity, CPU from /proc.
    - Backends that exited meanwhile (a connection pool that closes and reopens connections):
      their CPU lands in the postmaster's cutime/cstime when it reaps them, and forking them
      in the postmaster's own CPU; both are read from /proc too. Other databases' short
      sessions on the same server would be counted there as well (none in an idle setup).
    - Sessions opened: pg_stat_database.sessions (counted when a session ends or flushes).
    """

    def __init__(self, database: BenchDatabase) -> None:
        self.database = database
        self.postmaster: int | None = None
        row = database._admin().execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'").fetchone()
        if row is not None:
            fields = _stat_fields(int(row[0]))
            if fields:
                self.postmaster = int(fields[1])

    def snapshot(self) -> tuple[dict[int, float], float, int]:
        conn = self.database._admin()
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database.name,)
        ).fetchall()
        conn.execute("SELECT pg_stat_clear_snapshot()")
        sessions = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                                (self.database.name,)).fetchone()
        postmaster = 0.0
        if self.postmaster is not None:
            fields = _stat_fields(self.postmaster)
            if fields:
                postmaster = sum(int(v) for v in fields[11:15]) / CLK_TCK
        return ({int(pid): _cpu_seconds(int(pid)) for (pid,) in rows}, postmaster,
                int(sessions[0]) if sessions and sessions[0] is not None else 0)

    @staticmethod
    def spent(before, after) -> tuple[float, float, int]:
        """(live backends' CPU, exited backends' + postmaster's CPU, sessions opened)."""
        live = sum(cpu - before[0].get(pid, 0.0) for pid, cpu in after[0].items())
        return live, after[1] - before[1], after[2] - before[2]


# --------------------------------------------------------------------------------------------
# Targets and rounds


@dataclass
class Target:
    name: str
    server: Server
    path: str
    headers: dict[str, str]
    bodies: list[bytes]
    stream: bool = False
    kind: str = ""  # "mock", "floor" or "gaia"
    database: BenchDatabase | None = None  # the Gaia's own database (None: the first Gaia's)
    marker: bytes = CONTENT_MARKER  # streamed: what counts as the first content

    @property
    def url(self) -> str:
        return self.server.base_url + self.path


@dataclass
class Round:
    target: str
    concurrency: int
    index: int
    result: LoadResult
    server_cpu_s: float
    mock_cpu_s: float
    pg_cpu_s: float
    redis_cpu_s: float
    machine_busy: float
    pg_exited_cpu_s: float = 0.0  # backends that exited during the round, and the postmaster
    pg_sessions: int = 0  # PostgreSQL sessions opened to the bench database
    worker_cpu_s: list[float] = field(default_factory=list)  # per gunicorn worker, largest first
    upstream_connections: int = 0  # TCP connections the mock accepted during the round

    @property
    def other_cores(self) -> float:
        """Cores busy with anything not counted here (other jobs on the machine, kernel)."""
        elapsed = self.result.elapsed_s or float("nan")
        counted = (self.server_cpu_s + self.result.client_cpu_s + self.pg_cpu_s
                   + self.pg_exited_cpu_s + self.redis_cpu_s
                   + (self.mock_cpu_s if self.server_cpu_s != self.mock_cpu_s else 0.0))
        return max(0.0, self.machine_busy * (os.cpu_count() or 1) - counted / elapsed)

    @property
    def busiest_worker_share(self) -> float:
        total = sum(self.worker_cpu_s)
        return self.worker_cpu_s[0] / total if total > 0 and self.worker_cpu_s else float("nan")

    def per_request_us(self, seconds: float) -> float:
        return seconds / self.result.ok * 1e6 if self.result.ok else float("nan")

    def row(self) -> dict:
        data = self.result.to_dict()
        data.update(target=self.target, round=self.index, server_cpu_s=self.server_cpu_s,
                    mock_cpu_s=self.mock_cpu_s, pg_cpu_s=self.pg_cpu_s,
                    redis_cpu_s=self.redis_cpu_s, machine_busy=self.machine_busy,
                    pg_exited_cpu_s=self.pg_exited_cpu_s, pg_sessions=self.pg_sessions,
                    worker_cpu_s=self.worker_cpu_s, other_cores=self.other_cores,
                    upstream_connections=self.upstream_connections)
        return data


@dataclass
class Summary(RoundTotals):
    target: Target
    concurrency: int
    rounds: list[Round] = field(default_factory=list)

    def cpu_us(self, attribute: str) -> float:
        ok = self.ok
        return sum(getattr(r, attribute) for r in self.rounds) / ok * 1e6 if ok else float("nan")

    def client_cpu_us(self) -> float:
        ok = self.ok
        return sum(r.result.client_cpu_s for r in self.rounds) / ok * 1e6 if ok else float("nan")

    def pg_us(self) -> float:
        """PostgreSQL: live backends, plus backends that exited and the postmaster."""
        return self.cpu_us("pg_cpu_s") + self.cpu_us("pg_exited_cpu_s")

    def upstream_per_1000(self) -> float:
        ok = self.ok
        return sum(r.upstream_connections for r in self.rounds) / ok * 1000 if ok else float("nan")

    def sessions_per_1000(self) -> float:
        ok = self.ok
        return sum(r.pg_sessions for r in self.rounds) / ok * 1000 if ok else float("nan")

    def round_median(self, attribute: str) -> float:
        values = [getattr(r, attribute) for r in self.rounds]
        values = [v for v in values if v == v]
        return statistics.median(values) if values else float("nan")


def added(this: Summary, base: Summary, attribute: str) -> float:
    """Median over rounds of (this round's value - the base target's in the same round)."""
    pairs = {r.index: getattr(r.result, attribute) for r in base.rounds}
    diffs = [getattr(r.result, attribute) - pairs[r.index] for r in this.rounds if r.index in pairs]
    diffs = [d for d in diffs if d == d]
    return statistics.median(diffs) if diffs else float("nan")


class Meter:
    """Reads every CPU counter a round is charged with."""

    def __init__(self, mock: MockServer, pg: PgBackends, redis: list[int],
                 others: dict[str, PgBackends] | None = None) -> None:
        self.mock, self.pg, self.redis = mock, pg, redis
        self.others = others or {}  # database name -> its PgBackends (--also-root)

    def pg_for(self, target: Target) -> PgBackends:
        if target.database is not None and target.database.name in self.others:
            return self.others[target.database.name]
        return self.pg

    def read(self, server: Server, pg: PgBackends | None = None) -> tuple:
        workers = {p: _cpu_seconds(p) for p in server.workers()}
        return (_machine_jiffies(), server.cpu_seconds(), self.mock.cpu_seconds(),
                (pg or self.pg).snapshot(), sum(_cpu_seconds(p) for p in self.redis), workers,
                self.mock.stats()["connections"])

    def measure(self, target: Target, concurrency: int, duration: float, index: int) -> Round:
        pg = self.pg_for(target)
        before = self.read(target.server, pg)
        result = run_load(target.url, concurrency=concurrency, duration=duration, method="POST",
                          headers=target.headers, bodies=target.bodies, timeout=15.0,
                          first_marker=target.marker if target.stream else None)
        after = self.read(target.server, pg)
        (busy0, total0), (busy1, total1) = before[0], after[0]
        busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
        server_cpu = after[1] - before[1]
        mock_cpu = after[2] - before[2]
        if target.kind == "mock":
            server_cpu = mock_cpu
        live, exited, sessions = PgBackends.spent(before[3], after[3])
        workers = sorted((cpu - before[5].get(pid, 0.0) for pid, cpu in after[5].items()), reverse=True)
        # The second stats read is a connection of its own.
        upstream = after[6] - before[6] - 1 - (result.connects if target.kind == "mock" else 0)
        return Round(target.name, concurrency, index, result, server_cpu, mock_cpu, live,
                     after[4] - before[4], busy, exited, sessions, workers, upstream)


def run_rounds(meter: Meter, targets: list[Target], concurrencies: list[int], rounds: int,
               duration: float, results: dict, all_rounds: list[Round],
               reverse_even: bool = False) -> None:
    """Every target in each round, the order rotated by one each round (and, with
    `reverse_even`, reversed in even rounds, so that no target always follows the same one)."""
    for c in concurrencies:
        for target in targets:
            results[(target.name, c)] = Summary(target, c)
        for index in range(1, rounds + 1):
            shift = (index - 1) % len(targets)
            order = targets[shift:] + targets[:shift]
            if reverse_even and index % 2 == 0:
                order = order[::-1]
            for target in order:
                r = meter.measure(target, c, duration, index)
                results[(target.name, c)].rounds.append(r)
                all_rounds.append(r)
                log(f"c={c} round {index} {target.name}: {r.result.rps:.0f} req/s, p50 "
                    f"{r.result.p50_ms:.2f} p99 {r.result.p99_ms:.2f} ms"
                    + (f", first content p50 {r.result.ttfb_p50_ms:.2f} ms" if target.stream else "")
                    + f", server {r.per_request_us(r.server_cpu_s):.0f} µs/req"
                    + (f", errors {r.result.errors} {r.result.error_kinds}" if r.result.errors else ""))


# --------------------------------------------------------------------------------------------
# Report


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a and b > 0 else float("nan")


def counterpart(name: str, other: str) -> str:
    """gaia_v1 -> old_v1: the same target on the Gaia named `other` (--also-root)."""
    return other + name[len("gaia"):]


def _paired(this: Summary, other: Summary, per_round, whole) -> tuple[float, float, float]:
    """(this/other of the whole figures, min and max of the same ratio round by round)."""
    pairs = {r.index: r for r in other.rounds}
    values = [_ratio(per_round(r), per_round(pairs[r.index])) for r in this.rounds if r.index in pairs]
    values = [v for v in values if v == v]
    return (_ratio(whole(this), whole(other)), min(values) if values else float("nan"),
            max(values) if values else float("nan"))


BALANCED_SHARE = 0.75  # a round whose busiest worker took less than this share of the CPU

COMPARED = ("added_p50", "added_p99", "server_cpu", "cpu_with_db", "rps", "ttfb_p50", "added_ttfb_p50")


def paired_with(name: str, base: str, floor: str, results: dict, c: int) -> tuple[str, str]:
    """The mock and floor targets `name` is measured against: their tools twins for a tools
    target (the same body, so the provider's own work is the same on both sides)."""
    if "_tools" in name and "_tools" not in base:
        twins = base.replace("mock", "mock_tools", 1), floor.replace("floor", "floor_tools", 1)
        if (twins[0], c) in results and (twins[1], c) in results:
            return twins
    return base, floor


def compare_rows(results: dict, targets: list[Target], others: list[str], concurrencies: list[int],
                 base: str) -> list[dict]:
    """gaia's targets against their counterparts on each other Gaia: this/other ratios."""
    rows = []
    for c, t in [(c, t) for c in concurrencies for t in targets]:
        b = results[(paired_with(t.name, base, "floor", results, c)[0], c)]
        base_by = {r.index: r.result for r in b.rounds}

        def diff(attribute):
            return lambda r: getattr(r.result, attribute) - getattr(base_by[r.index], attribute) \
                if r.index in base_by else float("nan")

        def with_db(r: Round) -> float:
            return r.per_request_us(r.server_cpu_s + r.pg_cpu_s + r.pg_exited_cpu_s + r.redis_cpu_s)

        measures = {
            "added_p50": (diff("p50_ms"), lambda x: added(x, b, "p50_ms")),
            "added_p99": (diff("p99_ms"), lambda x: added(x, b, "p99_ms")),
            "server_cpu": (lambda r: r.per_request_us(r.server_cpu_s), lambda x: x.cpu_us("server_cpu_s")),
            "cpu_with_db": (with_db, lambda x: x.cpu_us("server_cpu_s") + x.pg_us() + x.cpu_us("redis_cpu_s")),
            "rps": (lambda r: r.result.rps, lambda x: x.median("rps")),
            "ttfb_p50": (lambda r: r.result.ttfb_p50_ms, lambda x: x.median("ttfb_p50_ms")),
            "added_ttfb_p50": (diff("ttfb_p50_ms"), lambda x: added(x, b, "ttfb_p50_ms")),
        }
        if t.kind != "gaia" or not t.name.startswith("gaia"):
            continue
        for other in others:
            key = (counterpart(t.name, other), c)
            if key not in results:
                continue
            this, that = results[(t.name, c)], results[key]
            row = {"concurrency": c, "target": t.name, "other": key[0], "other_gaia": other,
                   "stream": t.stream}
            for name, (per_round, whole) in measures.items():
                ratio, low, high = _paired(this, that, per_round, whole)
                row[name] = ratio
                row[name + "_min"], row[name + "_max"] = low, high
                row[name + "_this"], row[name + "_other"] = whole(this), whole(that)
            # gevent workers: sometimes one worker accepts every connection of a round (its
            # share of the CPU is then ~100%) and that round runs on one core. The same
            # comparison over the rounds where both sides spread over their workers:
            if c > 1:
                other_by = {r.index: r for r in that.rounds}
                keep = [r.index for r in this.rounds if r.index in other_by
                        and r.busiest_worker_share < BALANCED_SHARE
                        and other_by[r.index].busiest_worker_share < BALANCED_SHARE]
                row["balanced_rounds"] = keep
                for name in ("added_p50", "server_cpu", "rps", "ttfb_p50"):
                    per_round = measures[name][0]
                    values = [_ratio(per_round(r), per_round(other_by[r.index]))
                              for r in this.rounds if r.index in keep]
                    values = [v for v in values if v == v]
                    row[name + "_balanced"] = statistics.median(values) if values else float("nan")
            rows.append(row)
    return rows


def _cmp_cell(row: dict | None, key: str) -> str:
    if row is None:
        return "—"
    return f"{_f(row[key])}× ({_f(row[key + '_min'])}–{_f(row[key + '_max'])})"


def _cmp_lookup(comparisons: list[dict], target: str, other: str, c: int) -> dict | None:
    return next((r for r in comparisons if r["target"] == target and r["other_gaia"] == other
                 and r["concurrency"] == c), None)


def render_compare(rows: list[dict], stream: bool) -> str:
    """One line per gaia target and other Gaia: the ratios with their per-round min–max."""
    if stream:
        keys = [("ttfb_p50", "first content p50"), ("added_ttfb_p50", "added first content p50"),
                ("added_p50", "added whole answer p50"), ("server_cpu", "server CPU µs/req"),
                ("rps", "req/s")]
    else:
        keys = [("added_p50", "added p50"), ("added_p99", "added p99"),
                ("server_cpu", "server CPU µs/req"), ("cpu_with_db", "CPU incl. PostgreSQL+Redis"),
                ("rps", "req/s")]
    balanced_keys = ["ttfb_p50", "server_cpu", "rps"] if stream else ["added_p50", "server_cpu", "rps"]
    lines = ["| conc. | this → other | " + " | ".join(f"{label}: this, other, this/other (per round)"
                                                      for _, label in keys)
             + " | rounds with both on all workers: n, median this/other of "
             + ", ".join(balanced_keys) + " |",
             "|---:|---|" + "---:|" * (len(keys) + 1)]
    for r in rows:
        if r["stream"] != stream:
            continue
        digits = lambda k: 0 if k in ("server_cpu", "cpu_with_db", "rps") else 2  # noqa: E731
        cells = [f"{_f(r[k + '_this'], digits(k))}, {_f(r[k + '_other'], digits(k))}, **{_f(r[k])}×** "
                 f"({_f(r[k + '_min'])}–{_f(r[k + '_max'])})" for k, _ in keys]
        if "balanced_rounds" in r:
            cells.append(f"{len(r['balanced_rounds'])}: " + ", ".join(f"{_f(r[k + '_balanced'])}×"
                                                                    for k in balanced_keys))
        else:
            cells.append("— (c=1: one worker)")
        lines.append(f"| {r['concurrency']} | {r['target']} → {r['other']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_rounds_table(results: dict, targets: list[Target], concurrencies: list[int],
                        base: str, with_redis: bool, comparisons: list[dict] | None = None,
                        others: list[str] = ()) -> str:
    """`comparisons`/`others` (--also-root): gaia's rows gain gaia/NAME ratios of the added p50,
    the server CPU per request and req/s (per-round min–max in brackets)."""
    extra = "".join(f"| added p50 gaia/{n} | server CPU gaia/{n} | req/s gaia/{n} " for n in others)
    head = ("| conc. | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms "
            "| server CPU µs/req | mock CPU µs/req | PostgreSQL CPU µs/req | PG sessions /1000 req "
            + ("| Redis CPU µs/req " if with_redis else "")
            + "| loadgen CPU µs/req | upstream connections /1000 req | busiest worker's CPU share "
            "| other cores | errors " + extra + "|")
    lines = [head, "|---:|---|" + "|".join(["---:"] * (15 + with_redis + 3 * len(others))) + "|"]
    for c in concurrencies:
        for t in targets:
            s = results[(t.name, c)]
            b = results[(paired_with(t.name, base, "floor", results, c)[0], c)]
            is_base = t.kind == "mock"
            cells = [str(c), t.name, f"{s.median('rps'):.0f}", _f(s.median("p50_ms")),
                     _f(s.median("p99_ms")),
                     "—" if is_base else _f(added(s, b, "p50_ms")),
                     "—" if is_base else _f(added(s, b, "p99_ms")),
                     _f(s.cpu_us("server_cpu_s"), 0),
                     _f(s.cpu_us("mock_cpu_s"), 0),
                     _f(s.pg_us(), 0), _f(s.sessions_per_1000(), 1)]
            if with_redis:
                cells.append(_f(s.cpu_us("redis_cpu_s"), 0))
            share = s.round_median("busiest_worker_share")
            cells += [_f(s.client_cpu_us(), 0), "—" if t.kind == "mock" else _f(s.upstream_per_1000(), 1),
                      "—" if t.kind == "mock" else f"{share * 100:.0f}%",
                      _f(s.round_median("other_cores")), str(s.errors)]
            for other in others:
                row = _cmp_lookup(comparisons or [], t.name, other, c)
                cells += [_cmp_cell(row, "added_p50"), _cmp_cell(row, "server_cpu"), _cmp_cell(row, "rps")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_rows(results: dict, gaia_targets: list[str], concurrencies: list[int], base: str,
               floor: str) -> list[dict]:
    rows = []
    for c in concurrencies:
        for name in gaia_targets:
            base_name, floor_name = paired_with(name, base, floor, results, c)
            f, b = results[(floor_name, c)], results[(base_name, c)]
            f_add50, f_add99 = added(f, b, "p50_ms"), added(f, b, "p99_ms")
            f_cpu = f.cpu_us("server_cpu_s")
            g = results[(name, c)]
            g_add50, g_add99 = added(g, b, "p50_ms"), added(g, b, "p99_ms")
            g_cpu = g.cpu_us("server_cpu_s")
            g_cpu_all = g_cpu + g.pg_us() + g.cpu_us("redis_cpu_s")
            f_cpu_all = f_cpu + f.pg_us() + f.cpu_us("redis_cpu_s")
            rows.append({
                "concurrency": c, "target": name, "floor": floor_name,
                "floor_added_p50_ms": f_add50, "gaia_added_p50_ms": g_add50,
                "added_p50_ratio": _ratio(g_add50, f_add50),
                "floor_added_p99_ms": f_add99, "gaia_added_p99_ms": g_add99,
                "added_p99_ratio": _ratio(g_add99, f_add99),
                "floor_cpu_us": f_cpu, "gaia_cpu_us": g_cpu, "cpu_ratio": _ratio(g_cpu, f_cpu),
                "gaia_cpu_with_db_us": g_cpu_all, "cpu_with_db_ratio": _ratio(g_cpu_all, f_cpu_all),
                "rps_ratio": _ratio(g.median("rps"), f.median("rps")),
            })
    return rows


def render_ratios(rows: list[dict]) -> str:
    lines = ["| conc. | Gaia target | added p50 ms floor → Gaia | Gaia/floor | added p99 ms floor → Gaia "
             "| Gaia/floor | server CPU µs/req floor → Gaia | Gaia/floor | incl. PostgreSQL+Redis | req/s Gaia/floor |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['target']} | {_f(r['floor_added_p50_ms'])} → {_f(r['gaia_added_p50_ms'])} "
            f"| **{_f(r['added_p50_ratio'])}×** | {_f(r['floor_added_p99_ms'])} → {_f(r['gaia_added_p99_ms'])} "
            f"| {_f(r['added_p99_ratio'])}× | {_f(r['floor_cpu_us'], 0)} → {_f(r['gaia_cpu_us'], 0)} "
            f"| **{_f(r['cpu_ratio'])}×** | {_f(r['cpu_with_db_ratio'])}× | {_f(r['rps_ratio'])} |")
    return "\n".join(lines)


def stream_rows(results: dict, targets: list[Target], concurrencies: list[int], base: str,
                floor: str) -> list[dict]:
    rows = []
    for c in concurrencies:
        for t in targets:
            base_name, floor_name = paired_with(t.name, base, floor, results, c)
            b, f = results[(base_name, c)], results[(floor_name, c)]
            s = results[(t.name, c)]
            rows.append({
                "concurrency": c, "target": t.name, "base": base_name, "floor": floor_name,
                "ttfb_p50_ms": s.median("ttfb_p50_ms"), "ttfb_p99_ms": s.median("ttfb_p99_ms"),
                "total_p50_ms": s.median("p50_ms"), "total_p99_ms": s.median("p99_ms"),
                "added_ttfb_p50_ms": added(s, b, "ttfb_p50_ms") if t.kind != "mock" else float("nan"),
                "ttfb_vs_floor": _ratio(s.median("ttfb_p50_ms"), f.median("ttfb_p50_ms")),
                "added_ttfb_vs_floor": _ratio(added(s, b, "ttfb_p50_ms"), added(f, b, "ttfb_p50_ms")),
                "ttfb_p99_vs_floor": _ratio(s.median("ttfb_p99_ms"), f.median("ttfb_p99_ms")),
                "rps": s.median("rps"), "server_cpu_us": s.cpu_us("server_cpu_s"),
                "pg_cpu_us": s.pg_us(),
                "pg_sessions_per_1000": s.sessions_per_1000(),
                "upstream_connections_per_1000": s.upstream_per_1000(),
                "busiest_worker_share": s.round_median("busiest_worker_share"),
                "answers_with_content": sum(len(r.result.ttfb_ms) for r in s.rounds),
                "ok": s.ok, "errors": s.errors,
            })
    return rows


def render_streams(rows: list[dict], base: str, comparisons: list[dict] | None = None,
                   others: list[str] = ()) -> str:
    extra = "".join(f"| first content p50 gaia/{n} | added first content gaia/{n} "
                    f"| server CPU gaia/{n} " for n in others)
    lines = ["| conc. | target | first content p50 / p99 ms | whole answer p50 / p99 ms "
             "| added first content p50 ms | first content vs floor (p50) | added vs floor's added "
             "| req/s | server CPU µs/req | PostgreSQL CPU µs/req | upstream connections /1000 req | errors "
             + extra + "|",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (3 * len(others))]
    for r in rows:
        is_base = r["target"] == r.get("base", base)
        cells = ""
        for other in others:
            row = _cmp_lookup(comparisons or [], r["target"], other, r["concurrency"])
            cells += "".join(f"| {_cmp_cell(row, k)} " for k in ("ttfb_p50", "added_ttfb_p50", "server_cpu"))
        lines.append(
            f"| {r['concurrency']} | {r['target']} | {_f(r['ttfb_p50_ms'])} / {_f(r['ttfb_p99_ms'])} "
            f"| {_f(r['total_p50_ms'])} / {_f(r['total_p99_ms'])} "
            f"| {'—' if is_base else _f(r['added_ttfb_p50_ms'])} | {_f(r['ttfb_vs_floor'])}× "
            f"| {'—' if is_base else _f(r['added_ttfb_vs_floor']) + '×'} | {r['rps']:.0f} "
            f"| {_f(r['server_cpu_us'], 0)} | {_f(r['pg_cpu_us'], 0)} "
            f"| {'—' if is_base else _f(r['upstream_connections_per_1000'], 1)} | {r['errors']} {cells}|")
    return "\n".join(lines)


def render_per_round(rounds: list[Round]) -> str:
    lines = ["| conc. | round | target | req/s | p50 ms | p99 ms | first content p50 ms "
             "| server µs/req | mock µs/req | PG µs/req | PG sessions | loadgen µs/req "
             "| busiest worker | machine busy | other cores |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rounds:
        lines.append(
            f"| {r.concurrency} | {r.index} | {r.target} | {r.result.rps:.0f} | {_f(r.result.p50_ms)} "
            f"| {_f(r.result.p99_ms)} | {_f(r.result.ttfb_p50_ms)} | {_f(r.per_request_us(r.server_cpu_s), 0)} "
            f"| {_f(r.per_request_us(r.mock_cpu_s), 0)} "
            f"| {_f(r.per_request_us(r.pg_cpu_s + r.pg_exited_cpu_s), 0)} | {r.pg_sessions} "
            f"| {_f(r.per_request_us(r.result.client_cpu_s), 0)} | {_f(r.busiest_worker_share * 100, 0)}% "
            f"| {r.machine_busy * 100:.0f}% | {r.other_cores:.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Open streams


async def _poll(mock: MockServer, until, timeout: float) -> dict:
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + timeout
    stats = {}
    while time.perf_counter() < deadline:
        stats = await loop.run_in_executor(None, mock.stats)
        if until(stats):
            break
        await asyncio.sleep(0.1)
    return stats


async def _hold(server: Server, mock: MockServer, stream_target: Target, normal: Target, n: int,
                delay: float, normal_c: int) -> dict:
    mock.stats(reset=True)
    workers = server.workers()
    samples: list[dict] = []
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        while not stop_sampling.is_set():
            samples.append({"t": time.perf_counter(),
                            "rss_kib": {p: rss_kib(p) for p in workers},
                            "fds": {p: open_fds(p) for p in workers}})
            try:
                await asyncio.wait_for(stop_sampling.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    sampler = asyncio.ensure_future(sample())
    started = time.perf_counter()
    streams = asyncio.ensure_future(run_load_async(
        stream_target.url, concurrency=n, requests=n, duration=None, method="POST",
        headers=stream_target.headers, bodies=stream_target.bodies, timeout=delay + 30.0,
        time_limit=delay + 60.0, first_marker=CONTENT_MARKER,
        count_markers={"keepalive": KEEPALIVE_MARKER, "done": DONE_MARKER},
    ))
    stats = await _poll(mock, lambda s: s.get("slow_waiting", 0) >= n, max(delay - 3.0, 1.0))
    all_waiting_s = time.perf_counter() - started if stats.get("slow_waiting", 0) >= n else None
    log(f"hold {server.name}: {stats.get('slow_waiting', 0)} of {n} streams waiting at the mock "
        f"after {time.perf_counter() - started:.1f} s")
    window = delay - (time.perf_counter() - started) - 0.3
    during = None
    during_workers: list[float] = []
    if window > 1.0:
        cpu_before = {p: _cpu_seconds(p) for p in workers}
        during = await run_load_async(normal.url, concurrency=normal_c, duration=window,
                                      method="POST", headers=normal.headers, bodies=normal.bodies,
                                      timeout=15.0)
        during_workers = sorted((_cpu_seconds(p) - c for p, c in cpu_before.items()), reverse=True)
    waiting_at_end = (await asyncio.get_running_loop().run_in_executor(None, mock.stats)).get("slow_waiting", 0)
    result = await streams
    stop_sampling.set()
    await sampler
    final = mock.stats()
    peak_rss = max((sum(s["rss_kib"].values()) for s in samples), default=0)
    peak_fds = max((sum(s["fds"].values()) for s in samples), default=0)
    per_worker_peak = {str(p): max(s["rss_kib"].get(p, 0) for s in samples) for p in workers} if samples else {}
    per_worker_fds = {str(p): max(s["fds"].get(p, 0) for s in samples) for p in workers} if samples else {}
    return {
        "streams": result, "during": during, "all_waiting_after_s": all_waiting_s,
        "waiting_when_normal_load_ended": waiting_at_end, "mock_stats": final,
        "rss_kib_before": sum(samples[0]["rss_kib"].values()) if samples else 0,
        "rss_kib_peak": peak_rss, "rss_kib_peak_per_worker": per_worker_peak,
        "fds_peak": peak_fds, "fds_peak_per_worker": per_worker_fds,
        "normal_window_s": window,
        "during_worker_cpu_s": during_workers,
    }


def hold_test(server: Server, mock: MockServer, stream_target: Target, normal: Target, n: int,
              delay: float, normal_c: int) -> dict:
    # The same normal load without the hold, just before (same duration).
    window = max(delay - 4.0, 2.0)
    before = run_load(normal.url, concurrency=normal_c, duration=window, method="POST",
                      headers=normal.headers, bodies=normal.bodies, timeout=15.0)
    rss_idle = sum(rss_kib(p) for p in server.workers())
    cpu0 = server.cpu_seconds()
    held = asyncio.run(_hold(server, mock, stream_target, normal, n, delay, normal_c))
    held["server_cpu_s"] = server.cpu_seconds() - cpu0
    held["before"] = before
    held["rss_kib_idle"] = rss_idle
    return held


def render_hold(name: str, h: dict, n: int, delay: float) -> list[str]:
    s: LoadResult = h["streams"]
    during: LoadResult | None = h["during"]
    before: LoadResult = h["before"]
    ms = h["mock_stats"]
    lines = [
        f"{name}: {n} slow streams (first token after {delay:g} s):",
        f"  opened (200 head received) {s.heads_ok}, first content received {len(s.ttfb_ms)}, "
        f"completed (whole body, 200) {s.ok}, errors {s.errors} {s.error_kinds or ''}",
        f"  waiting at the mock at once: max {ms.get('slow_waiting_max')} "
        f"(all {n} after {_f(h['all_waiting_after_s'] or float('nan'), 1)} s); "
        f"the mock saw {ms.get('slow_started')} slow requests, finished {ms.get('slow_finished')}, "
        f"client disconnects {ms.get('disconnects')}",
        f"  keep-alive comments: {s.marker_counts.get('keepalive', 0)} in "
        f"{s.marker_responses.get('keepalive', 0)} streams; [DONE] in {s.marker_responses.get('done', 0)}",
        f"  stream head p50 {_f(percentile(s.head_ms, 50))} ms, first content p50 {_f(s.ttfb_p50_ms)} / "
        f"max {_f(s.ttfb_ms[-1] if s.ttfb_ms else float('nan'))} ms, whole p50 {_f(s.p50_ms)} / max {_f(s.max_ms)} ms",
        f"  normal requests c={before.concurrency} before the hold: {before.ok} ok, p50 {_f(before.p50_ms)} ms, "
        f"p99 {_f(before.p99_ms)} ms, {before.rps:.0f} req/s, errors {before.errors}",
    ]
    if during is not None:
        lines.append(
            f"  normal requests during the hold ({h['normal_window_s']:.1f} s): {during.ok} ok, p50 "
            f"{_f(during.p50_ms)} ms, p99 {_f(during.p99_ms)} ms, max {_f(during.max_ms)} ms, "
            f"{during.rps:.0f} req/s, errors {during.errors} {during.error_kinds or ''}"
            + (f"; busiest worker's share of the CPU meanwhile "
               f"{h['during_worker_cpu_s'][0] / sum(h['during_worker_cpu_s']) * 100:.0f}%"
               if sum(h.get("during_worker_cpu_s") or [0]) > 0 else ""))
    lines.append(
        f"  workers' RSS: {h['rss_kib_idle'] / 1024:.0f} MiB idle → peak {h['rss_kib_peak'] / 1024:.0f} MiB "
        f"during the hold (per worker {', '.join(f'{v / 1024:.0f}' for v in h['rss_kib_peak_per_worker'].values())} MiB); "
        f"open fds peak {h['fds_peak']} (per worker {', '.join(str(v) for v in h['fds_peak_per_worker'].values())}); "
        f"server CPU {h['server_cpu_s']:.2f} s for the whole hold")
    return lines


# --------------------------------------------------------------------------------------------
# Database counters per request


def db_phase(database: BenchDatabase, targets: list[Target], requests: int, settle: float) -> list[dict]:
    """Targets with a `database` of their own (--also-root) are counted in that one."""
    out = []
    current = database
    stats = database.stats(flush_wait=settle)
    for t in targets:
        db = t.database or database
        if db is not current:
            current = db
            stats = db.stats(flush_wait=settle)
        result = run_load(t.url, concurrency=4, requests=requests, duration=None, method="POST",
                          headers=t.headers, bodies=t.bodies, timeout=15.0)
        after = current.stats(flush_wait=settle)
        delta = {k: after[k] - stats[k] for k in stats if k != "numbackends"}
        n = result.ok + result.errors
        xacts = delta["xact_commit"] + delta["xact_rollback"]
        out.append({"target": t.name, "database": current.name, "requests": n, "errors": result.errors,
                    "delta": delta,
                    "transactions_per_request": xacts / n if n else float("nan"),
                    **{f"{k}_per_request": v / n if n else float("nan") for k, v in delta.items()}})
        log(f"db {t.name}: {n} requests, {xacts} transactions ({xacts / max(n, 1):.2f}/request), {delta}")
        stats = after
    return out


def render_db(rows: list[dict]) -> str:
    lines = ["| Gaia target | requests | transactions/req (commit + rollback) | rows returned/req "
             "| rows fetched/req | rows inserted/req | rows updated/req |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = r["delta"]
        lines.append(
            f"| {r['target']} | {r['requests']} | {r['transactions_per_request']:.2f} "
            f"({d['xact_commit'] / r['requests']:.2f} + {d['xact_rollback'] / r['requests']:.2f}) "
            f"| {r['tup_returned_per_request']:.1f} | {r['tup_fetched_per_request']:.1f} "
            f"| {r['tup_inserted_per_request']:.2f} | {r['tup_updated_per_request']:.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# In-process profile (a child process with Gaia's environment)


def profile_child() -> int:
    """Runs in a child: env BENCH_PROFILE_SPEC is JSON with requests, key, conversation."""
    import cProfile
    import io
    import pstats

    spec = json.loads(os.environ["BENCH_PROFILE_SPEC"])
    n = int(spec["requests"])
    import bench.floor_proxy as floor  # from this checkout (bench/ is imported from here)

    sys.path.insert(0, spec["gaia_root"])  # Gaia from the checkout being measured
    from wsgi import app as gaia

    def caller(app, path: str, headers: dict, body: bytes):
        return wsgi_caller(app, "POST", path, headers, body, content_type="application/json")

    key = spec["key"]
    cont = _dumps({"message": QUESTION, "model": MODEL, "conversation_id": spec["conversation"]})
    v1 = "/v1/chat/completions"
    bearer = {"Authorization": f"Bearer {key}"}
    callers = {
        "floor": caller(floor.app, v1, {"X-API-Key": FLOOR_KEY}, OPENAI_BODY),
        "gaia_v1": caller(gaia, v1, bearer, OPENAI_BODY),
        "gaia_chat_new": caller(gaia, API + "/chat", {"X-API-Key": key}, CHAT_BODY),
        "gaia_chat_cont": caller(gaia, API + "/chat", {"X-API-Key": key}, cont),
        "floor_stream": caller(floor.app, v1, {"X-API-Key": FLOOR_KEY}, OPENAI_STREAM_BODY),
        "gaia_v1_stream": caller(gaia, v1, bearer, OPENAI_STREAM_BODY),
        "gaia_chat_stream": caller(gaia, API + "/chat", {"X-API-Key": key}, CHAT_STREAM_BODY),
        "floor_tools": caller(floor.app, v1, {"X-API-Key": FLOOR_KEY}, OPENAI_TOOLS_BODY),
        "gaia_v1_tools": caller(gaia, v1, bearer, OPENAI_TOOLS_BODY),
        "gaia_v1_tools_stream": caller(gaia, v1, bearer, OPENAI_TOOLS_STREAM_BODY),
    }
    if spec.get("only"):
        callers = {name: call for name, call in callers.items() if name in spec["only"]}
    timing: dict[str, list] = {name: [] for name in callers}
    for _ in range(3):  # alternate, keep the best by CPU
        for name, call in callers.items():
            for _ in range(50):
                call()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                call()
            timing[name].append(((time.perf_counter() - w0) / n * 1e6, (time.process_time() - c0) / n * 1e6))
    best = {name: min(values, key=lambda v: v[1]) for name, values in timing.items()}
    profiles = {}
    for name in [name for name in callers if name.startswith("gaia") and not spec.get("no_cprofile")]:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            callers[name]()
        profiler.disable()
        texts = []
        for order in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats(order).print_stats(int(spec.get("rows") or 30))
            texts.append(buf.getvalue())
        profiles[name] = texts
    print(json.dumps({"best_wall_cpu_us": best, "profiles": profiles,
                      "gevent": bool(os.environ.get("BENCH_PROFILE_GEVENT"))}))
    return 0


def run_profile(gaia_env: dict, floor_env: dict, gaia_root: Path, api_key: str, conversation: str,
                requests: int, gevent: bool, only: list[str] = (), cprofile: bool = True) -> dict:
    env = dict(gaia_env, **{k: v for k, v in floor_env.items() if k.startswith("FLOOR_")})
    env.update(BENCH_PROFILE_SPEC=json.dumps(
        {"requests": requests, "key": api_key, "conversation": conversation,
         "gaia_root": str(gaia_root), "only": list(only), "no_cprofile": not cprofile,
         "rows": os.environ.get("BENCH_PROFILE_ROWS", "30")}),
        LOG_LEVEL="WARNING")
    if gevent:
        env["BENCH_PROFILE_GEVENT"] = "1"
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--profile-child"],
                               cwd=gaia_root, env=env, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        raise RuntimeError(f"profile child failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Setup helpers


def post_json(url: str, headers: dict, body: bytes, timeout: float = 15.0) -> dict:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers=dict(headers, **{"Content-Type": "application/json"}))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def warm(target: Target, concurrency: int, seconds: float) -> None:
    result = run_load(target.url, concurrency=concurrency, duration=seconds, method="POST",
                      headers=target.headers, bodies=target.bodies, timeout=15.0,
                      first_marker=target.marker if target.stream else None)
    if result.errors or not result.ok:
        raise RuntimeError(f"warm-up of {target.name} failed: {result.summary()}")
    if target.stream and len(result.ttfb_ms) != result.ok:
        raise RuntimeError(f"warm-up of {target.name}: {result.ok} answers but only "
                           f"{len(result.ttfb_ms)} with content")
    log(f"warm-up {target.name}: {result.summary()}")


def _ints(text: str) -> list[int]:
    return [int(v) for v in str(text).replace(" ", "").split(",") if v]


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--profile-child"]:
        return profile_child()
    parser = argparse.ArgumentParser(description="Gaia's chat path vs the floor proxy and the mock.")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per concurrency (4)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per target and round (3)")
    parser.add_argument("--concurrency", default="1,8,32", help="non-streamed concurrencies (1,8,32)")
    parser.add_argument("--stream-concurrency", default="1,8", help="streamed concurrencies (1,8)")
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY for both servers (2)")
    parser.add_argument("--worker-class", default="gevent",
                        help="GUNICORN_WORKER_CLASS for both servers (gevent, gunicorn.conf.py's "
                        "default; sync for a comparison: the hold is then skipped)")
    parser.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds per target (1.5)")
    parser.add_argument("--redis-url", type=_loopback_url, default=DEFAULT_REDIS_URL,
                        help=f"REDIS_URL for Gaia ({DEFAULT_REDIS_URL})")
    parser.add_argument("--no-redis", action="store_true", help="run Gaia without REDIS_URL")
    parser.add_argument("--rate-limit", default=BENCH_RATE_LIMIT,
                        help=f"RATE_LIMIT_DEFAULT for Gaia ({BENCH_RATE_LIMIT})")
    parser.add_argument("--pg-url", type=_loopback_url,
                        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help=f"maintenance database URL (env BENCH_PG_URL; {DEFAULT_PG_URL})")
    parser.add_argument("--hold-streams", type=int, default=TARGET_OPEN_STREAMS,
                        help=f"slow streams held open at once ({TARGET_OPEN_STREAMS})")
    parser.add_argument("--hold-delay", type=float, default=12.0,
                        help="the slow model's first-token delay, s (12: Gaia's keep-alive "
                        "comment comes at 10 s)")
    parser.add_argument("--hold-targets", default="gaia,floor",
                        help="servers the hold runs against (gaia,floor; also a NAME of --also-root)")
    parser.add_argument("--hold-endpoint", choices=("chat", "v1"), default="chat",
                        help="Gaia endpoint of the slow streams: chat (/api/v0.2/chat) or v1")
    parser.add_argument("--hold-normal-concurrency", type=int, default=4,
                        help="connections of normal (fast, non-streamed) requests during the hold (4)")
    parser.add_argument("--db-requests", type=int, default=300,
                        help="requests per Gaia kind for the database counters (300)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile N in-process calls per kind in a child process (0: no)")
    parser.add_argument("--profile-kinds", default="",
                        help="with --profile: only these kinds (comma list of floor, gaia_v1, gaia_v1_tools, "
                        "gaia_chat_new, ...; default all)")
    parser.add_argument("--no-cprofile", action="store_true",
                        help="with --profile: CPU per call only, no cProfile listings")
    parser.add_argument("--gaia-root", type=Path, default=ROOT,
                        help="run Gaia (gunicorn, flask db upgrade, create-admin) from this checkout "
                        "instead of this repository, e.g. a `git archive` export of a commit (the "
                        "floor and the mock always come from this repository's bench/)")
    parser.add_argument("--gaia-label", default=None,
                        help="what to call the Gaia being measured in the report (default: this "
                        "repository's commit, or the --gaia-root path)")
    parser.add_argument("--also-root", action="append", default=[], metavar="NAME=PATH",
                        help="one more Gaia in the same rounds: `wsgi:app` of the checkout at PATH "
                        "(gunicorn and its CLI run with cwd=PATH), e.g. old=/tmp/gaia-old; the same "
                        "environment and settings as gaia, its own database; its targets are "
                        "NAME_v1, NAME_chat_new, ...; NAME may be given to --hold-targets; repeatable")
    parser.add_argument("--no-tools", action="store_true",
                        help="leave out the /v1 with tools targets (mock_tools, floor_tools, gaia_v1_tools "
                        "and their streamed twins)")
    parser.add_argument("--short", action="store_true",
                        help="a short run for a small shared machine (~2.5 min): c=1 and 8, 3 rounds "
                        "x 2 s, 1 s warm-up, streams, db and hold skipped (options given explicitly win)")
    parser.add_argument("--skip", default="", help=f"comma list of phases to skip: {','.join(PHASES)}")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results (default bench/results/chat-<time>.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = parser.parse_args(argv)
    if args.short:
        given = set(argv if argv is not None else sys.argv[1:])
        for option, value in (("--rounds", 3), ("--duration", 2.0), ("--concurrency", "1,8"),
                              ("--warmup", 1.0), ("--skip", "streams,db,hold")):
            if option not in given and not any(g.startswith(option + "=") for g in given):
                setattr(args, option[2:].replace("-", "_"), value)

    concurrencies = _ints(args.concurrency)
    stream_concurrencies = _ints(args.stream_concurrency)
    skip = {s for s in args.skip.replace(" ", "").split(",") if s}
    if skip - set(PHASES):
        parser.error(f"--skip: unknown phase(s) {', '.join(sorted(skip - set(PHASES)))}")
    if args.rounds < 1 or args.duration <= 0 or min(concurrencies + stream_concurrencies + [1]) < 1:
        parser.error("rounds, duration and concurrencies must be positive")
    redis_url = None if args.no_redis else args.redis_url
    hold_targets = [t for t in args.hold_targets.replace(" ", "").split(",") if t]
    if args.worker_class != "gevent" and "hold" not in skip:
        log(f"--worker-class {args.worker_class}: the open-streams hold needs gevent; skipped")
        skip.add("hold")

    install_signal_handlers()

    limits = raise_fd_limit(args.hold_streams * 4 + 4096)
    started_at = datetime.now(timezone.utc)
    gaia_root = args.gaia_root.resolve()
    if not (gaia_root / "wsgi.py").is_file() or not (gaia_root / "gunicorn.conf.py").is_file():
        parser.error(f"--gaia-root {gaia_root}: no wsgi.py and gunicorn.conf.py there")
    revision = args.gaia_label or (git_revision() if gaia_root == ROOT else f"tree at {gaia_root}")
    roots: list[tuple[str, Path]] = []
    for item in args.also_root:
        name, sep, path = item.partition("=")
        if (not sep or not name or not path or not name.isidentifier() or name.startswith("gaia")
                or name in ("mock", "floor") or name in {n for n, _ in roots}):
            parser.error(f"--also-root {item!r}: expected NAME=PATH with a new simple NAME "
                         "(not mock, floor or gaia...)")
        other_root = Path(path).expanduser().resolve()
        if not (other_root / "wsgi.py").is_file() or not (other_root / "gunicorn.conf.py").is_file():
            parser.error(f"--also-root {item!r}: no wsgi.py and gunicorn.conf.py in {other_root}")
        roots.append((name, other_root))
    unknown_holds = set(hold_targets) - {"gaia", "floor"} - {n for n, _ in roots}
    if unknown_holds and "hold" not in skip:
        parser.error(f"--hold-targets: unknown {', '.join(sorted(unknown_holds))}")
    root_revisions = {name: (git_revision(path) if (path / ".git").exists() else f"tree at {path}")
                      for name, path in roots}
    root_databases = {name: BenchDatabase(args.pg_url) for name, _ in roots}
    database = BenchDatabase(args.pg_url)
    workdir = Path(tempfile.mkdtemp(prefix="gaia-bench-chat-"))
    servers: list[Server] = []
    exit_code = 1
    report: dict = {}
    with ExitStack() as cleanup:
        try:
            idle = background_cores()
            log(f"background load before start: {idle:.2f} of {os.cpu_count()} cores busy; "
                f"open files limit {limits[0]}")
            if idle > 0.25:
                log("WARNING: the machine is busy with other work; figures will be noisy")

            base_env = clean_environment()
            mock = MockServer("mock", "bench/mock_llm.py", dict(base_env), free_port(),
                              workdir / "mock.log")
            mock.first_token_delay = args.hold_delay
            servers.append(mock)
            cleanup.callback(mock.stop)
            mock.start()
            mock.wait_ready("/v1/models", {}, 0)
            upstream = f"{mock.base_url}/v1"

            database.create()
            cleanup.callback(database.drop)
            log(f"created database {database.name}")
            server_env = dict(base_env, HOST="127.0.0.1", WEB_CONCURRENCY=str(args.workers),
                              GUNICORN_WORKER_CLASS=args.worker_class, GUNICORN_THREADS="1")
            gaia_env = dict(server_env, DATABASE_URL=database.url, ENVIRONMENT="local",
                            GAIA_INSTANCE_PATH=str(workdir / "instance"),
                            RATE_LIMIT_DEFAULT=args.rate_limit, OPENAI_API_KEY=UPSTREAM_KEY,
                            OPENAI_BASE_URL=upstream)
            if redis_url:
                gaia_env["REDIS_URL"] = redis_url
            if roots:
                # Every Gaia's bytecode in one temporary cache: the other checkouts' trees are
                # not written to, and all start alike (nothing changes once imported).
                gaia_env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
            floor_env = dict(server_env, FLOOR_UPSTREAM=upstream, FLOOR_API_KEYS=FLOOR_KEY,
                             FLOOR_UPSTREAM_KEY=UPSTREAM_KEY)
            api_key = migrate_and_key(gaia_env, cwd=gaia_root)
            log("migrated and created the admin key")
            # The other checkouts: the same environment but for their own database and instance
            # folder; migrated and keyed by their own CLI.
            root_envs, root_keys = {}, {}
            for name, path in roots:
                db = root_databases[name]
                db.create()
                cleanup.callback(db.drop)
                root_envs[name] = dict(gaia_env, DATABASE_URL=db.url,
                                       GAIA_INSTANCE_PATH=str(workdir / f"instance-{name}"))
                root_keys[name] = migrate_and_key(root_envs[name], cwd=path)
                log(f"{name} ({path}, {root_revisions[name]}): database {db.name} migrated and "
                    "the admin key created with its own CLI")

            floor = Server("floor", "bench.floor_proxy:app", dict(floor_env, PORT=str(p := free_port())),
                           p, workdir / "floor.log")
            gaia = GaiaServer("gaia", "wsgi:app", dict(gaia_env, PORT=str(q := free_port())), q,
                              workdir / "gaia.log")
            gaia.cwd = gaia_root
            gaias: dict[str, tuple[GaiaServer, str, BenchDatabase | None]] = {"gaia": (gaia, api_key, None)}
            for name, path in roots:
                other = GaiaServer(name, "wsgi:app", dict(root_envs[name], PORT=str(q := free_port())), q,
                                   workdir / f"{name}.log")
                other.cwd = path
                gaias[name] = (other, root_keys[name], root_databases[name])
            started = [floor] + [g for g, _, _ in gaias.values()]
            for server in started:
                servers.append(server)
                cleanup.callback(server.stop)
                server.start()
            for server in started:
                server.wait_ready("/health/live", {}, args.workers)
            log("all servers up")

            json_h = {"Content-Type": "application/json"}
            mock_h = dict(json_h, Authorization=f"Bearer {UPSTREAM_KEY}")
            floor_h = dict(json_h, **{"X-API-Key": FLOOR_KEY})
            v1 = "/v1/chat/completions"
            by_gaia: dict[str, dict] = {}  # per Gaia: headers, conversations, targets
            for name, (server, key, db) in gaias.items():
                v1_h = dict(json_h, Authorization=f"Bearer {key}")
                chat_h = dict(json_h, **{"X-API-Key": key})
                # One conversation per connection for the continuing target.
                convs = []
                for _ in range(max(concurrencies + [4])):
                    answer = post_json(server.base_url + API + "/chat", chat_h, CHAT_BODY)
                    convs.append(answer["conversation_id"])
                cont_bodies = [_dumps({"message": QUESTION, "model": MODEL, "conversation_id": cid})
                               for cid in convs]
                by_gaia[name] = {
                    "server": server, "v1_h": v1_h, "chat_h": chat_h, "conversations": convs,
                    "database": db,
                    "targets": [
                        Target(f"{name}_v1", server, v1, v1_h, [OPENAI_BODY], kind="gaia", database=db),
                        Target(f"{name}_chat_new", server, API + "/chat", chat_h, [CHAT_BODY], kind="gaia",
                               database=db),
                        Target(f"{name}_chat_cont", server, API + "/chat", chat_h, cont_bodies, kind="gaia",
                               database=db),
                        Target(f"{name}_v1_tools", server, v1, v1_h, [OPENAI_TOOLS_BODY], kind="gaia",
                               database=db),
                    ],
                    "stream_targets": [
                        Target(f"{name}_v1_stream", server, v1, v1_h, [OPENAI_STREAM_BODY], True, "gaia",
                               database=db),
                        Target(f"{name}_chat_stream", server, API + "/chat", chat_h, [CHAT_STREAM_BODY],
                               True, "gaia", database=db),
                        Target(f"{name}_v1_tools_stream", server, v1, v1_h, [OPENAI_TOOLS_STREAM_BODY], True,
                               "gaia", database=db, marker=ARGUMENTS_MARKER),
                    ],
                }
            v1_h, chat_h = by_gaia["gaia"]["v1_h"], by_gaia["gaia"]["chat_h"]
            conversations = by_gaia["gaia"]["conversations"]
            # Each gaia target followed by its counterparts on the other Gaias.
            targets = [
                Target("mock", mock, v1, mock_h, [OPENAI_BODY], kind="mock"),
                Target("floor", floor, v1, floor_h, [OPENAI_BODY], kind="floor"),
            ] + [g["targets"][i] for i in range(3) for g in by_gaia.values()]
            stream_targets = [
                Target("mock_stream", mock, v1, mock_h, [OPENAI_STREAM_BODY], True, "mock"),
                Target("floor_stream", floor, v1, floor_h, [OPENAI_STREAM_BODY], True, "floor"),
            ] + [g["stream_targets"][i] for i in range(2) for g in by_gaia.values()]
            if not args.no_tools:
                # "/v1 with tools", against the mock and the floor with the same body.
                targets += [Target("mock_tools", mock, v1, mock_h, [OPENAI_TOOLS_BODY], kind="mock"),
                            Target("floor_tools", floor, v1, floor_h, [OPENAI_TOOLS_BODY], kind="floor")]
                targets += [g["targets"][3] for g in by_gaia.values()]
                stream_targets += [
                    Target("mock_tools_stream", mock, v1, mock_h, [OPENAI_TOOLS_STREAM_BODY], True, "mock",
                           marker=ARGUMENTS_MARKER),
                    Target("floor_tools_stream", floor, v1, floor_h, [OPENAI_TOOLS_STREAM_BODY], True, "floor",
                           marker=ARGUMENTS_MARKER),
                ] + [g["stream_targets"][2] for g in by_gaia.values()]
            by_name = {t.name: t for t in targets + stream_targets}
            others = [name for name, _ in roots]
            for t in targets + stream_targets:
                warm(t, 8, args.warmup)

            pg = PgBackends(database)
            meter = Meter(mock, pg, redis_server_pids() if redis_url else [],
                          {db.name: PgBackends(db) for db in root_databases.values()})
            results: dict = {}
            all_rounds: list[Round] = []
            report.update(started_at=started_at.isoformat(), gaia_revision=revision,
                          machine={"cores": os.cpu_count(), "background_cores_busy": idle,
                                   "platform": platform.platform(),
                                   "python": platform.python_version()},
                          settings={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                          redis_url=redis_url, database=database.name,
                          other_gaias={name: {"path": str(path), "revision": root_revisions[name],
                                              "database": root_databases[name].name}
                                       for name, path in roots})
            header = (f"Gaia {revision}, gunicorn {args.worker_class} x {args.workers} workers "
                      f"(floor the same); REDIS_URL={redis_url or '(none)'}; "
                      f"{args.rounds} alternating rounds x {args.duration:g} s; medians over rounds; "
                      f"{os.cpu_count()} cores, {idle:.2f} busy before start; {started_at:%Y-%m-%d %H:%M} UTC")
            printed: list[str] = [header, ""]
            for name, path in roots:
                printed += [f"{name}: wsgi:app of {path} ({root_revisions[name]}), in the same rounds "
                            f"with the same environment and settings, its own database "
                            f"{root_databases[name].name}; targets {name}_v1, {name}_chat_new, ...; the "
                            "order rotates each round and is reversed every other round. Ratios "
                            f"gaia/{name}: of the medians over rounds (CPU: of the totals), and in "
                            "brackets the min–max of the same ratio paired round by round.", ""]

            if "rounds" not in skip:
                t0 = time.monotonic()
                run_rounds(meter, targets, concurrencies, args.rounds, args.duration, results, all_rounds,
                           reverse_even=bool(roots))
                log(f"rounds done in {time.monotonic() - t0:.0f} s")
                gaia_names = [t.name for t in targets if t.kind == "gaia"]
                rows = ratio_rows(results, gaia_names, concurrencies, "mock", "floor")
                comparisons = compare_rows(results, targets, others, concurrencies, "mock")
                report["rounds"] = {
                    "summary": [{"target": t.name, "concurrency": c, "rps": results[(t.name, c)].median("rps"),
                                 "p50_ms": results[(t.name, c)].median("p50_ms"),
                                 "p99_ms": results[(t.name, c)].median("p99_ms"),
                                 "added_p50_ms": added(results[(t.name, c)], results[("mock", c)], "p50_ms"),
                                 "added_p99_ms": added(results[(t.name, c)], results[("mock", c)], "p99_ms"),
                                 "server_cpu_us": results[(t.name, c)].cpu_us("server_cpu_s"),
                                 "mock_cpu_us": results[(t.name, c)].cpu_us("mock_cpu_s"),
                                 "pg_cpu_us": results[(t.name, c)].pg_us(),
                                 "pg_live_backends_cpu_us": results[(t.name, c)].cpu_us("pg_cpu_s"),
                                 "pg_sessions_per_1000": results[(t.name, c)].sessions_per_1000(),
                                 "upstream_connections_per_1000": results[(t.name, c)].upstream_per_1000(),
                                 "busiest_worker_share": results[(t.name, c)].round_median("busiest_worker_share"),
                                 "other_cores": results[(t.name, c)].round_median("other_cores"),
                                 "redis_cpu_us": results[(t.name, c)].cpu_us("redis_cpu_s"),
                                 "client_cpu_us": results[(t.name, c)].client_cpu_us(),
                                 "ok": results[(t.name, c)].ok, "errors": results[(t.name, c)].errors}
                                for c in concurrencies for t in targets],
                    "ratios": rows,
                    "comparisons": comparisons,
                }
                printed += ["Non-streamed chat (added = this p50/p99 minus the mock's, same round):", "",
                            render_rounds_table(results, targets, concurrencies, "mock", bool(redis_url),
                                                comparisons, others), "",
                            "Gaia against the floor:", "", render_ratios(rows), ""]
                if others:
                    printed += ["Each gaia target against its counterpart (this/other; per-round min–max):", "",
                                render_compare(comparisons, stream=False), ""]
            if "streams" not in skip:
                t0 = time.monotonic()
                run_rounds(meter, stream_targets, stream_concurrencies, args.rounds, args.duration,
                           results, all_rounds, reverse_even=bool(roots))
                log(f"stream rounds done in {time.monotonic() - t0:.0f} s")
                srows = stream_rows(results, stream_targets, stream_concurrencies, "mock_stream", "floor_stream")
                scomp = compare_rows(results, stream_targets, others, stream_concurrencies, "mock_stream")
                report["streams"] = srows
                report["stream_comparisons"] = scomp
                printed += ["Streamed chat (first content = the first `data:` event with non-empty content):", "",
                            render_streams(srows, "mock_stream", scomp, others), ""]
                if others:
                    printed += ["Each streamed gaia target against its counterpart (this/other; per-round min–max):",
                                "", render_compare(scomp, stream=True), ""]
            report["rounds_raw"] = [r.row() for r in all_rounds]

            if "db" not in skip:
                # Grouped by Gaia, so that each database's counters are read in one sequence.
                db_targets = [t for g in by_gaia.values() for t in g["targets"] + g["stream_targets"]
                              if not (args.no_tools and "_tools" in t.name)]
                rows_db = db_phase(database, db_targets, args.db_requests, STATS_SETTLE_S)
                report["db"] = rows_db
                names = ", ".join([database.name] + [db.name for db in root_databases.values()])
                printed += [f"Database (pg_stat_database of {names}, {args.db_requests} requests "
                            "per kind at c=4, counters settled 11 s):", "", render_db(rows_db), ""]

            if "hold" not in skip:
                report["hold"] = {}
                slow_chat = _dumps({"message": QUESTION, "model": SLOW_MODEL, "stream": True})
                slow_v1 = _dumps({"model": SLOW_MODEL, "stream": True,
                                  "messages": [{"role": "user", "content": QUESTION}]})
                for name in hold_targets:
                    if name in by_gaia:
                        g = by_gaia[name]
                        server = g["server"]
                        if args.hold_endpoint == "chat":
                            st = Target(f"{name}_slow", server, API + "/chat", g["chat_h"], [slow_chat], True,
                                        "gaia", database=g["database"])
                            normal = by_name[f"{name}_chat_new"]  # fast model
                        else:
                            st = Target(f"{name}_slow", server, v1, g["v1_h"], [slow_v1], True, "gaia",
                                        database=g["database"])
                            normal = by_name[f"{name}_v1"]
                    elif name == "floor":
                        st = Target("floor_slow", floor, v1, floor_h, [slow_v1], True, "floor")
                        normal, server = by_name["floor"], floor
                    else:
                        raise RuntimeError(f"--hold-targets: unknown {name!r}")
                    log(f"hold: {args.hold_streams} slow streams to {name} ({st.path}), normal "
                        f"c={args.hold_normal_concurrency} {normal.name}")
                    h = hold_test(server, mock, st, normal, args.hold_streams, args.hold_delay,
                                  args.hold_normal_concurrency)
                    lines = render_hold(f"{name} ({st.path})", h, args.hold_streams, args.hold_delay)
                    for line in lines:
                        log(line)
                    printed += lines + [""]
                    report["hold"][name] = {
                        k: (v.to_dict() if isinstance(v, LoadResult) else v) for k, v in h.items()
                    }
                    report["hold"][name]["streams_head_p50_ms"] = percentile(h["streams"].head_ms, 50)
                    time.sleep(1.0)

            if args.profile:
                log(f"profiling {args.profile} in-process calls per kind in a child process")
                only = [k for k in args.profile_kinds.replace(" ", "").split(",") if k]
                prof = run_profile(gaia_env, floor_env, gaia_root, api_key, conversations[-1], args.profile,
                                   args.worker_class == "gevent", only, not args.no_cprofile)
                report["profile"] = prof
                printed += ["In-process, one child, no gunicorn"
                            + (" (gevent monkey-patched, as in a gevent worker)" if prof.get("gevent") else "")
                            + "; best of 3 by CPU, µs per call:", ""]
                printed += [f"  {name}: wall {w:.0f}, CPU {c:.0f}" for name, (w, c) in prof["best_wall_cpu_us"].items()]
                for name, (by_tottime, by_cumulative) in prof["profiles"].items():
                    printed += ["", f"--- cProfile {name}, by own time ---", by_tottime,
                                f"--- cProfile {name}, by cumulative time ---", by_cumulative]

            for server in servers:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")

            verdicts = verdict_lines(report, concurrencies, stream_concurrencies, args.hold_streams)
            printed += ["Targets:"] + verdicts
            if all_rounds:
                printed += ["", "Per round:", "", render_per_round(all_rounds)]
            print()
            print("\n".join(printed))
            report["verdicts"] = verdicts
            report["finished_at"] = datetime.now(timezone.utc).isoformat()
            output = write_results(results_path(args.output, "chat", started_at), report)
            log(f"results written to {output} ({(datetime.now(timezone.utc) - started_at).total_seconds():.0f} s in all)")
            errors = sum(s.errors for s in results.values())
            exit_code = 0 if errors == 0 else 2
        except (KeyboardInterrupt, Interrupted) as exc:
            exit_code = interrupted(exc)
        except Exception as exc:
            log(f"failed: {exc!r}")
            log_server_tails(servers)
            exit_code = 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    remove_workdir(workdir, args.keep_logs)
    return exit_code


def verdict_lines(report: dict, concurrencies: list[int], stream_concurrencies: list[int],
                  hold_streams: int) -> list[str]:
    lines = []

    def mark(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    rounds = report.get("rounds")
    if rounds:
        by = {(s["target"], s["concurrency"]): s for s in rounds["summary"]}
        if 1 in concurrencies:
            for name in ("gaia_chat_new", "gaia_chat_cont"):
                s = by[(name, 1)]
                ok = s["added_p50_ms"] < TARGET_C1_ADDED_P50_MS
                lines.append(f"- c=1 {name}: added p50 {_f(s['added_p50_ms'])} ms (< {TARGET_C1_ADDED_P50_MS:g}) "
                             f"-> {mark(ok)} [added p99 {_f(s['added_p99_ms'])} ms]")
        for r in rounds["ratios"]:
            if not r["target"].startswith("gaia_"):
                continue
            v1 = r["target"].startswith("gaia_v1")
            if v1 and r["concurrency"] in (1, 8):
                ok_lat = r["added_p50_ratio"] <= TARGET_V1_RATIO
                ok_cpu = r["cpu_ratio"] <= TARGET_V1_RATIO
                lines.append(
                    f"- c={r['concurrency']} {r['target']} (against {r['floor']}): added p50 "
                    f"{_f(r['added_p50_ratio'])}× (≤ {TARGET_V1_RATIO:g}×) -> {mark(ok_lat)}; server CPU "
                    f"{_f(r['cpu_ratio'])}× (≤ {TARGET_V1_RATIO:g}×) -> {mark(ok_cpu)} "
                    f"[p99 {_f(r['added_p99_ratio'])}×]")
            elif not v1:
                ok_cpu = r["cpu_ratio"] <= TARGET_CPU_RATIO
                lines.append(
                    f"- c={r['concurrency']} {r['target']}: server CPU {_f(r['cpu_ratio'])}× the floor's "
                    f"(≤ {TARGET_CPU_RATIO:g}×) -> {mark(ok_cpu)} [{_f(r['cpu_with_db_ratio'])}× with "
                    f"PostgreSQL and Redis; added p50 {_f(r['added_p50_ratio'])}×]")
    for r in report.get("streams") or ():
        if r["target"] in ("gaia_v1_stream", "gaia_chat_stream", "gaia_v1_tools_stream"):
            ok = r["ttfb_vs_floor"] <= TARGET_TTFB_RATIO
            lines.append(f"- streaming c={r['concurrency']} {r['target']}: first content p50 "
                         f"{_f(r['ttfb_p50_ms'])} ms = {_f(r['ttfb_vs_floor'])}× the floor's (≤ {TARGET_TTFB_RATIO:g}×) "
                         f"-> {mark(ok)} [added over the mock: {_f(r['added_ttfb_vs_floor'])}× the floor's]")
    hold = (report.get("hold") or {}).get("gaia")
    if hold:
        s, d = hold["streams"], hold["during"]
        ok = (s["heads_ok"] >= hold_streams and s["ok"] >= hold_streams
              and hold["mock_stats"].get("slow_waiting_max", 0) >= hold_streams
              and d is not None and d["errors"] == 0 and d["ok"] > 0)
        lines.append(f"- {hold_streams} open slow streams on Gaia: {hold['mock_stats'].get('slow_waiting_max')} "
                     f"waiting at once, {s['heads_ok']} opened, {s['ok']} completed; normal requests during "
                     f"the hold: {d['ok'] if d else 0} ok, {d['errors'] if d else 'n/a'} errors, p99 "
                     f"{_f(d['p99_ms']) if d else 'n/a'} ms (before: {_f(hold['before']['p99_ms'])} ms) -> {mark(ok)}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
