"""Authenticated `GET /api/v0.2/models` on Gaia vs a bare Flask endpoint, same gunicorn settings.

Run from the repository root with the project's virtualenv:

    .venv/bin/python bench/bench_models_auth.py                 # defaults: 5 rounds x 5 s, c=8 and c=1
    .venv/bin/python bench/bench_models_auth.py --auth-cache-ttl 60 --rounds 3

What it does, in one run:
  1. creates a fresh PostgreSQL database gaia_bench_<random> (dropped at the end, always),
     runs the migrations and creates an admin API key with Gaia's own CLI;
  2. starts Gaia (`wsgi:app`) and the bare app (`bench.bare_app:app`) under gunicorn with
     gunicorn.conf.py and identical settings (HOST, PORT, WEB_CONCURRENCY, sync workers),
     each on a free loopback port, and waits until both answer 200;
  3. warms both up, then measures in alternating rounds (bare, gaia, bare, gaia, ...) for each
     concurrency, with bench/loadgen.py in this process;
  4. reads pg_stat_database for the bench database before and after the measured rounds and
     reports database transactions per 1000 Gaia requests;
  5. prints a table (median req/s over rounds, p50/p99 latency, gaia/bare ratio, and the CPU
     seconds each server used per request) and writes it as JSON under bench/results/.

Everything it starts is stopped on exit, on an exception and on Ctrl-C / SIGTERM.
Only 127.0.0.1 is ever contacted. PostgreSQL is reached through BENCH_PG_URL
(default postgres://postgres@127.0.0.1:5432/postgres: the maintenance database, used to
create, watch and drop the bench database).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402  (a Gaia runtime dependency)
from psycopg import sql  # noqa: E402

from bench.loadgen import LoadResult, run_load  # noqa: E402

MODELS_PATH = "/api/v0.2/models"
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
TARGET_RATIO = 0.70
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Settings that would change how either server runs; the runner sets them itself.
_SCRUBBED_ENV = (
    "HOST", "PORT", "WEB_CONCURRENCY", "GUNICORN_WORKER_CLASS", "GUNICORN_THREADS",
    "GUNICORN_WORKER_CONNECTIONS", "GUNICORN_TIMEOUT", "GUNICORN_CMD_ARGS", "GAIA_ACCESS_LOG",
    "DATABASE_URL", "GAIA_INSTANCE_PATH", "ENVIRONMENT", "SERVICE_NAME", "AUTH_CACHE_TTL",
    "AUTH_NEGATIVE_CACHE_TTL", "LAST_USED_FLUSH_INTERVAL", "LOG_LEVEL", "FLASK_APP",
    "FLASK_DEBUG", "PYTHONPROFILEIMPORTTIME",
)


class Interrupted(Exception):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# PostgreSQL


class BenchDatabase:
    """A throw-away database, watched and dropped through the maintenance connection."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"gaia_bench_{secrets.token_hex(4)}"
        self._conn: psycopg.Connection | None = None

    @property
    def url(self) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{self.name}"

    def _admin(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            url = self.admin_url.replace("postgres://", "postgresql://", 1)
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        return self._conn

    def create(self) -> None:
        self._admin().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))

    def drop(self) -> None:
        try:
            conn = self._admin()
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )
            log(f"dropped database {self.name}")
        finally:
            if self._conn is not None:
                self._conn.close()

    def stats(self, flush_wait: float = 1.5) -> dict[str, int]:
        """Counters of pg_stat_database for the bench database, after backends flushed them.

        Backends publish their counters when idle, at most about once a second; wait, then
        drop this session's snapshot so the read is fresh.
        """
        time.sleep(flush_wait)
        conn = self._admin()
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted,"
            " tup_updated, tup_deleted, numbackends FROM pg_stat_database WHERE datname = %s",
            (self.name,),
        ).fetchone()
        keys = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "tup_inserted",
                "tup_updated", "tup_deleted", "numbackends")
        return dict(zip(keys, (int(v) for v in row)))


# --------------------------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Server:
    name: str
    app: str
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    _log_file: object = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app],
            cwd=ROOT,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches the workers
        )
        log(f"started {self.name} ({self.app}) on {self.base_url}, master pid {self.proc.pid}")

    def workers(self) -> list[int]:
        return _children(self.proc.pid) if self.proc else []

    def cpu_seconds(self) -> float:
        """CPU used so far by the master and its live workers."""
        if not self.proc:
            return 0.0
        return _cpu_seconds(self.proc.pid) + sum(_cpu_seconds(p) for p in self.workers())

    def wait_ready(self, path: str, headers: dict[str, str], workers: int, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode} before it was ready; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                request = urllib.request.Request(self.base_url + path, headers=headers)
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200 and len(self.workers()) >= workers:
                        return
                    last_error = f"status {response.status}, {len(self.workers())} workers"
            except OSError as exc:
                last_error = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s ({last_error})")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group this runner created
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        log(f"stopped {self.name} (exit {self.proc.returncode})")
        if self._log_file:
            self._log_file.close()


# --------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Round:
    target: str
    concurrency: int
    index: int
    result: LoadResult
    server_cpu_s: float
    machine_busy: float  # share of all cores busy during the round, 0..1

    def row(self) -> dict:
        data = self.result.to_dict()
        data.update(target=self.target, round=self.index, server_cpu_s=self.server_cpu_s,
                    machine_busy=self.machine_busy)
        return data


@dataclass
class Summary:
    target: str
    concurrency: int
    rounds: list[Round] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r.result, attribute) for r in self.rounds)

    @property
    def ok(self) -> int:
        return sum(r.result.ok for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.result.errors for r in self.rounds)

    @property
    def server_cpu_us_per_request(self) -> float:
        ok = self.ok
        return sum(r.server_cpu_s for r in self.rounds) / ok * 1e6 if ok else float("nan")

    @property
    def client_cpu_us_per_request(self) -> float:
        ok = self.ok
        return sum(r.result.client_cpu_s for r in self.rounds) / ok * 1e6 if ok else float("nan")


def _machine_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def measure(server: Server, url: str, headers: dict, concurrency: int, duration: float,
            index: int) -> Round:
    busy0, total0 = _machine_jiffies()
    cpu0 = server.cpu_seconds()
    result = run_load(url, concurrency=concurrency, duration=duration, headers=headers)
    cpu1 = server.cpu_seconds()
    busy1, total1 = _machine_jiffies()
    busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
    return Round(server.name, concurrency, index, result, cpu1 - cpu0, busy)


def run_cli(env: dict[str, str], *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"flask {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return completed.stdout


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def render_table(summaries: dict[tuple[str, int], Summary], concurrencies: list[int]) -> str:
    lines = [
        "| conc. | bare req/s | gaia req/s | gaia/bare | bare p50 / p99 ms | gaia p50 / p99 ms "
        "| bare srv CPU µs/req | gaia srv CPU µs/req | errors (bare/gaia) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in concurrencies:
        bare, gaia = summaries[("bare", c)], summaries[("gaia", c)]
        b_rps, g_rps = bare.median("rps"), gaia.median("rps")
        ratio = g_rps / b_rps if b_rps else float("nan")
        lines.append(
            f"| {c} | {b_rps:.0f} | {g_rps:.0f} | **{ratio * 100:.0f}%** "
            f"| {bare.median('p50_ms'):.2f} / {bare.median('p99_ms'):.2f} "
            f"| {gaia.median('p50_ms'):.2f} / {gaia.median('p99_ms'):.2f} "
            f"| {bare.server_cpu_us_per_request:.0f} | {gaia.server_cpu_us_per_request:.0f} "
            f"| {bare.errors} / {gaia.errors} |"
        )
    return "\n".join(lines)


def render_rounds(rounds: list[Round]) -> str:
    lines = ["| conc. | round | target | req/s | p50 ms | p99 ms | srv CPU µs/req | machine busy |",
             "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rounds:
        per_req = r.server_cpu_s / r.result.ok * 1e6 if r.result.ok else float("nan")
        lines.append(
            f"| {r.concurrency} | {r.index} | {r.target} | {r.result.rps:.0f} "
            f"| {r.result.p50_ms:.2f} | {r.result.p99_ms:.2f} | {_fmt(per_req, 0)} "
            f"| {r.machine_busy * 100:.0f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Gaia's authenticated GET /api/v0.2/models vs a bare Flask endpoint.",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round (5)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per target and concurrency (5)")
    parser.add_argument("--concurrency", default="8,1",
                        help="comma list of connection counts, each measured in turn (8,1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server (2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per server (2)")
    parser.add_argument("--auth-cache-ttl", type=float, default=None,
                        help="AUTH_CACHE_TTL for Gaia (default: the app's own, 1.0 s)")
    parser.add_argument("--last-used-flush-interval", type=float, default=None,
                        help="LAST_USED_FLUSH_INTERVAL for Gaia (default: the app's own, 30 s)")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help="maintenance database URL (must be on 127.0.0.1)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results file (default bench/results/models_auth-<time>.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the gunicorn logs dir")
    args = parser.parse_args(argv)

    concurrencies = [int(c) for c in str(args.concurrency).replace(" ", "").split(",") if c]
    if args.rounds < 1 or args.duration <= 0 or not concurrencies or min(concurrencies) < 1:
        parser.error("rounds, duration and concurrency must be positive")
    if "127.0.0.1" not in args.pg_url and "localhost" not in args.pg_url:
        parser.error("--pg-url must point at 127.0.0.1")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)

    started_at = datetime.now(timezone.utc)
    database = BenchDatabase(args.pg_url)
    workdir = Path(tempfile.mkdtemp(prefix="gaia-bench-"))
    servers: list[Server] = []
    exit_code = 1
    with ExitStack() as cleanup:
        try:
            # 1. Database, schema, key.
            database.create()
            cleanup.callback(database.drop)
            log(f"created database {database.name}")

            base_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
            base_env.update(HOST="127.0.0.1", WEB_CONCURRENCY=str(args.workers),
                            GUNICORN_WORKER_CLASS="sync", GUNICORN_THREADS="1",
                            PYTHONDONTWRITEBYTECODE="1")
            gaia_env = dict(base_env, DATABASE_URL=database.url, ENVIRONMENT="local",
                            GAIA_INSTANCE_PATH=str(workdir / "instance"))
            if args.auth_cache_ttl is not None:
                gaia_env["AUTH_CACHE_TTL"] = str(args.auth_cache_ttl)
            if args.last_used_flush_interval is not None:
                gaia_env["LAST_USED_FLUSH_INTERVAL"] = str(args.last_used_flush_interval)

            run_cli(gaia_env, "db", "upgrade")
            out = run_cli(gaia_env, "create-admin", "--email", "bench@gaia.dev")
            api_key = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                           if line.startswith("API key:"))
            log("migrated and created the admin key")

            # 2. Servers, identical gunicorn settings.
            servers = []
            for name, app, env in (("bare", "bench.bare_app:app", base_env),
                                   ("gaia", "wsgi:app", gaia_env)):
                port = free_port()
                servers.append(Server(name, app, dict(env, PORT=str(port)), port,
                                      workdir / f"{name}.log"))
            for server in servers:
                cleanup.callback(server.stop)
                server.start()
            headers = {"bare": {}, "gaia": {"X-API-Key": api_key}}
            for server in servers:
                server.wait_ready(MODELS_PATH, headers[server.name], args.workers)
            log("both servers answer 200 on " + MODELS_PATH)

            # 3. Warm-up (every worker imports lazily, opens its DB connection, fills its cache).
            for server in servers:
                warm = run_load(server.base_url + MODELS_PATH, concurrency=max(concurrencies),
                                duration=args.warmup, headers=headers[server.name])
                if warm.errors:
                    raise RuntimeError(f"warm-up of {server.name} had errors: {warm.summary()}")
                log(f"warm-up {warm.summary()}")

            # 4. Alternating rounds, with DB counters around them.
            before = database.stats()
            rounds: list[Round] = []
            summaries: dict[tuple[str, int], Summary] = {}
            for c in concurrencies:
                for name in ("bare", "gaia"):
                    summaries[(name, c)] = Summary(name, c)
                for index in range(1, args.rounds + 1):
                    for server in servers:
                        r = measure(server, server.base_url + MODELS_PATH, headers[server.name],
                                    c, args.duration, index)
                        rounds.append(r)
                        summaries[(server.name, c)].rounds.append(r)
                        log(f"round {index} {server.name:4} {r.result.summary()}")
            after = database.stats()

            for server in servers:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")

            # 5. Report.
            gaia_requests = sum(s.ok + s.errors for (n, _), s in summaries.items() if n == "gaia")
            delta = {k: after[k] - before[k] for k in before if k != "numbackends"}
            xacts = delta["xact_commit"] + delta["xact_rollback"]
            per_1000 = xacts / gaia_requests * 1000 if gaia_requests else float("nan")
            measured_s = sum(r.result.elapsed_s for r in rounds if r.target == "gaia")

            ttl = args.auth_cache_ttl if args.auth_cache_ttl is not None else "1.0 (app default)"
            flush = (args.last_used_flush_interval if args.last_used_flush_interval is not None
                     else "30 (app default)")
            table = render_table(summaries, concurrencies)
            print()
            print(f"Gaia GET {MODELS_PATH} (X-API-Key) vs bare Flask, gunicorn sync x "
                  f"{args.workers} workers each; {args.rounds} alternating rounds x "
                  f"{args.duration:g} s per concurrency; medians over rounds.")
            print(f"AUTH_CACHE_TTL={ttl}, LAST_USED_FLUSH_INTERVAL={flush}; "
                  f"{os.cpu_count()} cores; {started_at:%Y-%m-%d %H:%M} UTC")
            print()
            print(table)
            print()
            for c in concurrencies:
                ratio = summaries[("gaia", c)].median("rps") / summaries[("bare", c)].median("rps")
                verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
                print(f"c={c}: gaia keeps {ratio * 100:.0f}% of bare req/s -> {verdict} the "
                      f"{TARGET_RATIO * 100:.0f}% target")
            print()
            print(f"Database ({database.name}) during the measured rounds: {xacts} transactions "
                  f"({delta['xact_commit']} commit, {delta['xact_rollback']} rollback), "
                  f"tup_returned {delta['tup_returned']}, tup_fetched {delta['tup_fetched']}, "
                  f"tup_updated {delta['tup_updated']}, for {gaia_requests} Gaia requests "
                  f"over {measured_s:.1f} s of Gaia load -> {per_1000:.2f} transactions per 1000 "
                  f"requests ({xacts / measured_s if measured_s else 0:.2f} per second of load).")
            load_cpu = {k: round(s.client_cpu_us_per_request) for k, s in
                        ((f"{n}@c{c}", s) for (n, c), s in summaries.items())}
            print(f"Load generator CPU µs/request (same process, shares the 2 cores): {load_cpu}")
            print()
            print("Per round:")
            print(render_rounds(rounds))

            output = args.output or ROOT / "bench" / "results" / (
                f"models_auth-{started_at:%Y%m%dT%H%M%SZ}.json")
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps({
                "started_at": started_at.isoformat(),
                "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()},
                "settings": {"duration": args.duration, "rounds": args.rounds,
                             "concurrency": concurrencies, "workers": args.workers,
                             "auth_cache_ttl": args.auth_cache_ttl,
                             "last_used_flush_interval": args.last_used_flush_interval},
                "summary": [
                    {"target": n, "concurrency": c, "median_rps": s.median("rps"),
                     "median_p50_ms": s.median("p50_ms"), "median_p99_ms": s.median("p99_ms"),
                     "server_cpu_us_per_request": s.server_cpu_us_per_request,
                     "client_cpu_us_per_request": s.client_cpu_us_per_request,
                     "ok": s.ok, "errors": s.errors}
                    for (n, c), s in summaries.items()
                ],
                "database": {"before": before, "after": after, "delta": delta,
                             "transactions": xacts, "gaia_requests": gaia_requests,
                             "transactions_per_1000_requests": per_1000},
                "rounds": [r.row() for r in rounds],
            }, indent=2))
            log(f"results written to {output}")
            errors = sum(s.errors for s in summaries.values())
            exit_code = 0 if errors == 0 else 2
        except (KeyboardInterrupt, Interrupted) as exc:
            log(f"interrupted ({exc or 'Ctrl-C'}); cleaning up")
            exit_code = 130
        except Exception as exc:
            log(f"failed: {exc}")
            for server in servers:
                if server.proc is not None:
                    log(f"--- {server.name} log tail ---\n{server.log_tail()}")
            exit_code = 1
        finally:
            # Ignore a second Ctrl-C while the servers and the database are being cleaned up.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"logs kept in {workdir}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
