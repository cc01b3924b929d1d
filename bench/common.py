"""What Gaia's benchmark scripts share: processes, databases, servers, signals and results.

Imported by bench_models_auth.py, bench_auth.py, bench_chat.py, bench_gateway.py,
bench_assets.py, bench_asset_enqueue.py and profile_models_auth.py:
  - a clean environment for the servers and Gaia's CLI (`flask db upgrade`, the admin key);
  - a throw-away PostgreSQL database gaia_bench_<random>, watched and dropped through the
    maintenance connection;
  - gunicorn servers on free loopback ports, waited for, and stopped with their workers;
  - CPU time of processes and of the whole machine, read from /proc;
  - signal handling (SIGINT/SIGTERM/SIGHUP raise Interrupted), the working folder, and the
    JSON results under bench/results/;
  - Gaia's app called in-process as a WSGI callable, and time per call.

Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402  (a Gaia runtime dependency)
from psycopg import sql  # noqa: E402

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/postgres"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS_DIR = ROOT / "bench" / "results"
ADMIN_EMAIL = "bench@gaia.dev"

# The servers get a clean environment: only these are passed through from the caller's,
# everything else is set by the runner, so a stray DATABASE_URL, REDIS_URL or GUNICORN_CMD_ARGS
# in the shell cannot change what is measured.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV")

# Gaia limits each API key to RATE_LIMIT_DEFAULT (60/minute) requests; the benchmark sends
# thousands per second with one key, so the limit is raised out of the way. The limiter still
# runs (and is measured) on every request.
BENCH_RATE_LIMIT = "1000000000/minute"


def git_revision(root: Path = ROOT) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+local changes" if dirty else "")


class Interrupted(KeyboardInterrupt):
    """SIGTERM / SIGHUP / SIGINT. A KeyboardInterrupt, so that asyncio (the load generator)
    lets it through instead of logging it as a failed callback."""


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

    def stats(self, flush_wait: float = 11.0) -> dict[str, int]:
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


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name ([] when the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (its threads included), in seconds."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def redis_server_pids() -> list[int]:
    """Local redis-server processes (their CPU is part of what Redis costs)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip().startswith("redis-server"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


@dataclass
class Server:
    name: str
    app: str
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    _log_file: object = None
    cwd: Path = ROOT  # the checkout gunicorn runs from (another one with --also-root)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.app],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches the workers
        )
        where = "" if self.cwd == ROOT else f" in {self.cwd}"
        log(f"started {self.name} ({self.app}{where}) on {self.base_url}, master pid {self.proc.pid}")

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
# /proc


def _machine_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def background_cores(seconds: float = 2.0) -> float:
    """Cores kept busy by others while this runner waits (before any server starts)."""
    busy0, total0 = _machine_jiffies()
    time.sleep(seconds)
    busy1, total1 = _machine_jiffies()
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------
# Gaia's CLI and the command line


def run_cli(env: dict[str, str], *args: str, cwd: Path = ROOT) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"flask {' '.join(args)} failed ({completed.returncode}):\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    return completed.stdout


def gaia_environment(base_env: dict[str, str], database_url: str, instance: Path,
                     args: argparse.Namespace) -> dict[str, str]:
    """Gaia's environment: `base_env`, the database, the instance folder, and the settings of
    the options rate_limit, redis_url, auth_cache_ttl and last_used_flush_interval."""
    env = dict(base_env, DATABASE_URL=database_url, ENVIRONMENT="local",
               GAIA_INSTANCE_PATH=str(instance), RATE_LIMIT_DEFAULT=args.rate_limit)
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    if args.auth_cache_ttl is not None:
        env["AUTH_CACHE_TTL"] = str(args.auth_cache_ttl)
    if args.last_used_flush_interval is not None:
        env["LAST_USED_FLUSH_INTERVAL"] = str(args.last_used_flush_interval)
    return env


def _loopback_url(value: str) -> str:
    from urllib.parse import urlsplit

    host = urlsplit(value).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise argparse.ArgumentTypeError(f"{value!r} is not on 127.0.0.1")
    return value


def clean_environment() -> dict[str, str]:
    """The caller's environment reduced to _PASSED_ENV: the base of every server's and CLI's."""
    return {k: v for k, v in os.environ.items() if k in _PASSED_ENV}


def create_admin_key(env: dict[str, str], email: str = ADMIN_EMAIL, cwd: Path = ROOT) -> str:
    """`flask create-admin` of the checkout at `cwd`; the API key it printed."""
    out = run_cli(env, "create-admin", "--email", email, cwd=cwd)
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if line.startswith("API key:"))


def migrate_and_key(env: dict[str, str], cwd: Path = ROOT) -> str:
    """`flask db upgrade`, then the admin key (create_admin_key), with the checkout's own CLI."""
    run_cli(env, "db", "upgrade", cwd=cwd)
    return create_admin_key(env, cwd=cwd)


# --------------------------------------------------------------------------------------------
# Signals, the working folder, results


def install_signal_handlers(*more: signal.Signals) -> None:
    """SIGINT, SIGTERM and SIGHUP (and `more`) raise Interrupted, so that cleanup runs."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, *more):
        signal.signal(signum, _on_signal)


def interrupted(exc: BaseException) -> int:
    """Logs the interruption; the exit status for it (130)."""
    log(f"interrupted ({exc or 'Ctrl-C'}); cleaning up")
    return 130


def log_server_tails(servers) -> None:
    """The end of the log of every server that was started."""
    for server in servers:
        if server.proc is not None:
            log(f"--- {server.name} log tail ---\n{server.log_tail()}")


def remove_workdir(workdir: Path, keep_logs: bool) -> None:
    if keep_logs:
        log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def results_path(output: Path | None, stem: str, started_at: datetime) -> Path:
    """--output, or bench/results/<stem>-<UTC time>.json."""
    return output or RESULTS_DIR / f"{stem}-{started_at:%Y%m%dT%H%M%SZ}.json"


def write_results(output: Path, data: dict) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=2, default=str))
    return output


# --------------------------------------------------------------------------------------------
# Rounds


class RoundTotals:
    """Totals over `self.rounds` (each with a loadgen result), for a summary of rounds."""

    rounds: list

    def median(self, attribute: str) -> float:
        values = [getattr(r.result, attribute) for r in self.rounds]
        values = [v for v in values if v == v]
        return statistics.median(values) if values else float("nan")

    @property
    def ok(self) -> int:
        return sum(r.result.ok for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.result.errors for r in self.rounds)


# --------------------------------------------------------------------------------------------
# Gaia's app in this process


def wsgi_caller(app, method: str, path: str, headers: dict[str, str], body: bytes = b"", *,
                expect: str = "200", content_type: str | None = None,
                environ_overrides: dict | None = None, check: bool = True):
    """A function that runs one request through `app` like a WSGI server (the body read,
    closed), raising when the status does not start with `expect`; called once here when
    `check`."""
    from werkzeug.test import EnvironBuilder

    template = EnvironBuilder(path=path, method=method, headers=headers, data=body or None,
                              content_type=content_type,
                              environ_overrides=environ_overrides).get_environ()
    template.pop("wsgi.input", None)
    status = [""]

    def start_response(line, response_headers, exc_info=None):
        status[0] = line

    def call() -> None:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(body)
        out = app(environ, start_response)
        try:
            for _ in out:
                pass
        finally:
            if hasattr(out, "close"):
                out.close()
        if not status[0].startswith(expect):
            raise RuntimeError(f"{method} {path} answered {status[0]}")

    if check:
        call()
    return call


def time_calls(call, n: int) -> tuple[float, float]:
    """(wall µs, CPU µs of the whole process) per call over n calls."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        call()
    return (time.perf_counter() - wall0) / n * 1e6, (time.process_time() - cpu0) / n * 1e6


def release_app(app) -> None:
    """Write pending key use now and close the pool, so nothing touches the dropped database."""
    from gaia_app.extensions import db

    try:
        app.extensions["gaia"].last_used.flush()
    except Exception as exc:
        log(f"could not flush last_used_at: {exc}")
    with app.app_context():
        db.engine.dispose()
