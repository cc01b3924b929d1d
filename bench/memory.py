"""Memory of an idle Gaia gunicorn worker beside the floor proxy's, and what each import costs.

Server mode (the default) starts, from the repository root and exactly like production,

    python -m gunicorn -c gunicorn.conf.py wsgi:app                 (Gaia, after `flask db upgrade`)
    python -m gunicorn -c gunicorn.conf.py bench.floor_proxy:app    (the floor: Flask + requests)

each with HOST=127.0.0.1, a free port, WEB_CONCURRENCY=2 and the default (gevent) workers, in a
clean environment (PATH, HOME, LANG and the variables set here; nothing else from the shell).
Gaia gets a throw-away GAIA_INSTANCE_PATH (SQLite in it), or a database from --database-url,
or a throw-away PostgreSQL database `gaia_mem_<random>` with --postgres. Once both answer,
every worker is warmed on keep-alive connections (Gaia: /health/live, /health and an
authenticated GET /api/v0.2/models; floor: /health/live) until each worker has served at
least --min-warm connections (the server side of each connection is matched to the worker
holding it through /proc/net/tcp and /proc/<pid>/fd). After --settle seconds the script
reads RSS, PSS and USS (Private_Clean + Private_Dirty) of the master and of every worker from
/proc/<pid>/smaps_rollup.

--imports mode starts no server. In fresh interpreters that first run gevent's
monkey.patch_all() (as a gevent worker does): which top-level modules `create_app()` loads
(and who imports each first), which of them a bare Flask app does not need, the VmRSS delta
of importing each module alone over that baseline, the cumulative RSS after all libraries,
then gaia_app.* / blueprints.*, then create_app(), then a first GET /health, and what
deferring each package the app imports itself (or a group of them) would save: the RSS of
all the worker's libraries minus that of the closures of the other direct imports.

    .venv/bin/python bench/memory.py                  # ~10 s
    .venv/bin/python bench/memory.py --postgres       # PostgreSQL at 127.0.0.1:5432, user postgres
    .venv/bin/python bench/memory.py --imports        # ~40 s (--repeat 1: ~20 s)
    .venv/bin/python bench/memory.py --json           # JSON on stdout (progress on stderr)

Standard library only (plus psycopg from the venv for --postgres). Talks only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

SCRIPT_ROOT = Path(__file__).resolve().parent.parent
MODELS_PATH = "/api/v0.2/models"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSED_ENV = ("PATH", "HOME", "LANG")
MIB = 1024.0

# Measured one by one in --imports mode, beside every other third-party package create_app()
# loads (those are found at run time and added).
REQUIRED_MODULES = [
    "sqlalchemy", "flask_sqlalchemy", "flask_migrate", "alembic", "flask_smorest", "apispec",
    "marshmallow", "webargs", "flask_swagger_ui", "flask_cors", "psycopg", "redis", "requests",
    "jwt", "cryptography", "argon2", "limits", "celery", "kombu", "click", "werkzeug", "flask",
    "gevent", "urllib3",
]

# What deferring a group of the app's own imports would save. Each group names packages that
# gaia_app/blueprints import directly; deferring them keeps every package that another direct
# import still needs (see run_imports).
GROUPS = {
    "migrations: flask_migrate + alembic": ["flask_migrate", "alembic"],
    "JWT: jwt (and cryptography through it)": ["jwt"],
    "Swagger UI: flask_swagger_ui": ["flask_swagger_ui"],
    "CORS: flask_cors": ["flask_cors"],
    "rate limits: limits": ["limits"],
    "passwords: argon2": ["argon2"],
    "OpenAPI framework: flask_smorest (keeps marshmallow)": ["flask_smorest"],
    "migrations + JWT + Swagger UI + CORS": ["flask_migrate", "alembic", "jwt", "flask_swagger_ui",
                                             "flask_cors"],
}


class Deadline(Exception):
    pass


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environment

def find_root(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    cwd = Path.cwd()
    if (cwd / "wsgi.py").is_file() and (cwd / "gunicorn.conf.py").is_file():
        return cwd
    return SCRIPT_ROOT


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def require_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise SystemExit(f"{what} must point at 127.0.0.1 (got host {host!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_dirty(root: Path) -> bool:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                             capture_output=True, text=True, timeout=10).stdout
        # Changes under bench/ (this script among them) do not change what is measured.
        return any(line[3:] and not line[3:].startswith("bench/") for line in out.splitlines())
    except (OSError, subprocess.SubprocessError):
        return False


class ThrowAwayDatabase:
    """CREATE DATABASE gaia_mem_<random> on the maintenance URL; DROP it on close."""

    def __init__(self, maintenance_url: str) -> None:
        require_loopback(maintenance_url, "--pg-url")
        import psycopg  # the venv's; only needed here

        self._psycopg = psycopg
        self.maintenance_url = maintenance_url
        self.name = f"gaia_mem_{secrets.token_hex(4)}"
        with psycopg.connect(maintenance_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        parts = urlsplit(maintenance_url)
        self.url = urlunsplit((parts.scheme, parts.netloc, f"/{self.name}", "", ""))

    def drop(self) -> None:
        try:
            with self._psycopg.connect(self.maintenance_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except Exception as error:  # noqa: BLE001 - reported; nothing else to do
            log(f"could not drop database {self.name}: {error}")


# --------------------------------------------------------------------------- /proc readings

def smaps_rollup(pid: int) -> dict[str, float]:
    """RSS, PSS, USS (Private_Clean + Private_Dirty) and swap in MiB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return {
        "rss": fields.get("Rss", 0) / MIB,
        "pss": fields.get("Pss", 0) / MIB,
        "uss": (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / MIB,
        "shared": (fields.get("Shared_Clean", 0) + fields.get("Shared_Dirty", 0)) / MIB,
        "anon": fields.get("Anonymous", 0) / MIB,
        "swap": fields.get("Swap", 0) / MIB,
    }


def children_of(pid: int) -> list[int]:
    kids: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    kids.update(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    if not kids:  # kernels without the children file: scan for the parent pid
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        stat = f.read()
                    if int(stat.rpartition(")")[2].split()[1]) == pid:
                        kids.add(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
    return sorted(kids)


def server_socket_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the accepted (server side) socket of one loopback connection."""
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                if (int(local.rsplit(":", 1)[1], 16) == server_port
                        and int(remote.rsplit(":", 1)[1], 16) == client_port):
                    return inode
    except OSError:
        pass
    return None


def process_holding(inode: str, pids: list[int]) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    pass
        except OSError:
            pass
    return None


# --------------------------------------------------------------------------- servers

class Server:
    def __init__(self, name: str, target: str, env: dict[str, str], root: Path, logdir: Path,
                 workers: int) -> None:
        self.name, self.target, self.env, self.root = name, target, env, root
        self.port = int(env["PORT"])
        self.workers = workers
        self.log_path = logdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", self.target],
            cwd=self.root, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return children_of(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: gunicorn exited with {self.proc.returncode}\n"
                                   f"{self.log_tail()}")
            if len(self.worker_pids()) >= self.workers:
                try:
                    status, _ = get(self.port, "/health/live")
                    if status == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not ready in time\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the session this script started (master, workers).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log_file.close()


def get(port: int, path: str, headers: dict | None = None, conn: http.client.HTTPConnection | None = None
        ) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def warm_up(server: Server, requests_: list[tuple[str, dict]], min_per_worker: int,
            deadline: float, batch: int = 4, max_rounds: int = 12) -> dict[int, int]:
    """Rounds of `batch` keep-alive connections opened at once and used concurrently (one
    request at a time, one after another, a fast worker would accept them all), each carrying
    every warm-up request, until each worker has served `min_per_worker` connections.
    Returns the connections each worker served."""
    workers = server.worker_pids()
    served = {pid: 0 for pid in workers}

    def use(conn: http.client.HTTPConnection) -> None:
        for path, headers in requests_:
            status, body = get(server.port, path, headers, conn)
            if status != 200:
                raise RuntimeError(f"{server.name}: GET {path} answered {status}: {body[:300]!r}")

    with ThreadPoolExecutor(max_workers=batch) as pool:
        for _ in range(max_rounds):
            if min(served.values()) >= min_per_worker or time.monotonic() > deadline:
                break
            conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                     for _ in range(batch)]
            try:
                for conn in conns:
                    conn.connect()
                list(pool.map(use, conns))
                for conn in conns:  # still open: the worker holding the other end served it
                    inode = server_socket_inode(server.port, conn.sock.getsockname()[1])
                    owner = process_holding(inode, workers) if inode else None
                    if owner is not None:
                        served[owner] += 1
            finally:
                for conn in conns:
                    conn.close()
    return served


def flask_cli(root: Path, env: dict[str, str], *args: str, timeout: float = 60) -> str:
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def summarize(readings: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.mean(r[key] for r in readings) for key in ("rss", "pss", "uss", "shared", "anon")}


def run_servers(args: argparse.Namespace, root: Path, tmp: Path, database_url: str | None,
                deadline: float) -> dict:
    instance = tmp / "instance"
    instance.mkdir()
    gaia_env = clean_env(HOST="127.0.0.1", PORT=str(free_port()), WEB_CONCURRENCY=str(args.workers),
                         GAIA_INSTANCE_PATH=str(instance), ENVIRONMENT="local",
                         DATABASE_URL=database_url, REDIS_URL=args.redis_url)
    floor_env = clean_env(HOST="127.0.0.1", PORT=str(free_port()), WEB_CONCURRENCY=str(args.workers),
                          FLOOR_UPSTREAM="http://127.0.0.1:9/v1", FLOOR_API_KEYS="k")

    log(f"migrating ({'SQLite in ' + str(instance) if not database_url else database_url}) ...")
    flask_cli(root, gaia_env, "db", "upgrade")
    out = flask_cli(root, gaia_env, "create-admin", "--email", "admin@gaia.local")
    match = re.search(r"API key: (gaia_\S+)", out)
    if not match:
        raise RuntimeError(f"create-admin printed no key:\n{out}")
    key = match.group(1)

    servers = [Server("gaia", args.gaia_app, gaia_env, root, tmp, args.workers),
               Server("floor", "bench.floor_proxy:app", floor_env, root, tmp, args.workers)]
    warm = {
        "gaia": [("/health/live", {}), ("/health", {}), (MODELS_PATH, {"X-API-Key": key})],
        "floor": [("/health/live", {})],
    }
    result: dict = {}
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(deadline)
            log(f"{server.name}: up on port {server.port}, master {server.pid}, "
                f"workers {server.worker_pids()}")
        for server in servers:
            served = warm_up(server, warm[server.name], args.min_warm, deadline)
            log(f"{server.name}: warm-up connections per worker {served}")
            result[server.name] = {"warmup_connections": {str(k): v for k, v in served.items()}}
        time.sleep(args.settle)
        for server in servers:
            workers = server.worker_pids()
            per_worker = {pid: smaps_rollup(pid) for pid in workers}
            result[server.name].update({
                "target": server.target,
                "master": smaps_rollup(server.pid),
                "workers": {str(pid): r for pid, r in per_worker.items()},
                "worker_mean": summarize(list(per_worker.values())),
                "total_rss": smaps_rollup(server.pid)["rss"] + sum(r["rss"] for r in per_worker.values()),
                "total_pss": smaps_rollup(server.pid)["pss"] + sum(r["pss"] for r in per_worker.values()),
            })
    finally:
        signal.alarm(0)  # stopping is bounded by itself (10 s, then SIGKILL)
        for server in servers:
            server.stop()
    result["ratio"] = {k: result["gaia"]["worker_mean"][k] / result["floor"]["worker_mean"][k]
                       for k in ("rss", "pss", "uss")}
    return result


def render_servers(result: dict) -> str:
    g, f = result["gaia"]["worker_mean"], result["floor"]["worker_mean"]
    lines = [
        "| per idle worker (mean) | Gaia MiB | floor MiB | Gaia/floor | Gaia − floor MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in (("rss", "RSS"), ("pss", "PSS"), ("uss", "USS (private)"),
                       ("anon", "anonymous (heap)")):
        lines.append(f"| {label} | {g[key]:.1f} | {f[key]:.1f} | {g[key] / f[key]:.2f}× "
                     f"| {g[key] - f[key]:.1f} |")
    lines += ["", "| process | RSS | PSS | USS | shared | anon |", "|---|---:|---:|---:|---:|---:|"]
    for name in ("gaia", "floor"):
        m = result[name]["master"]
        lines.append(f"| {name} master | {m['rss']:.1f} | {m['pss']:.1f} | {m['uss']:.1f} | {m['shared']:.1f} "
                     f"| {m['anon']:.1f} |")
        for pid, r in result[name]["workers"].items():
            warm = result[name]["warmup_connections"].get(pid, "?")
            lines.append(f"| {name} worker {pid} ({warm} warm-up conn.) | {r['rss']:.1f} | {r['pss']:.1f} "
                         f"| {r['uss']:.1f} | {r['shared']:.1f} | {r['anon']:.1f} |")
        lines.append(f"| {name} total (master + workers) | {result[name]['total_rss']:.1f} "
                     f"| {result[name]['total_pss']:.1f} | | | |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- --imports mode

CHILD_PRELUDE = r'''
import importlib, json, sys
def _mem():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_kib"] = int(line.split()[1])
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                out["anon_kib"] = int(line.split()[1])
    out["modules"] = len(sys.modules)
    return out
def _tops():
    return {name.partition(".")[0] for name in sys.modules}
from gevent import monkey
monkey.patch_all()
'''

# Which top-level modules create_app() loads, in order, and who imported each first.
CHILD_DISCOVER = CHILD_PRELUDE + r'''
import importlib.abc
first = {}
class _Tracer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in first and top not in sys.modules:
            chain, frame = [], sys._getframe(1)
            while frame is not None:
                mod = frame.f_globals.get("__name__", "?")
                if not mod.startswith(("importlib", "_frozen_importlib")) and (not chain or chain[-1] != mod):
                    chain.append(mod)
                frame = frame.f_back
            first[top] = list(reversed(chain))[1:]
        return None
before = _tops()
sys.meta_path.insert(0, _Tracer())
import gaia_app
app = gaia_app.create_app()
sys.meta_path.pop(0)
order = []
for name in sys.modules:
    top = name.partition(".")[0]
    if top not in before and top not in order:
        order.append(top)
submodules = {}
for name, module in list(sys.modules.items()):
    if getattr(module, "__spec__", None) is None:  # e.g. Cython's shared _cython_3_x module
        continue
    submodules.setdefault(name.partition(".")[0], []).append(name)
print(json.dumps({"baseline_tops": sorted(before), "order": order,
                  "chains": {t: first.get(t, []) for t in order},
                  "submodules": {t: submodules.get(t, []) for t in order}}))
'''

CHILD_BARE = CHILD_PRELUDE + r'''
before = _tops()
from flask import Flask, jsonify
app = Flask("bare")
@app.get("/health/live")
def live():
    return jsonify(status="ok")
app.test_client().get("/health/live")
print(json.dumps({"tops": sorted(_tops() - before), "mem": _mem()}))
'''

# steps: [[label, kind, arg]]; kind: import (list of names), exec (code), create_app, health.
CHILD_MEASURE = CHILD_PRELUDE + r'''
steps = json.loads(sys.argv[1])
out = [["baseline", _mem()]]
app = None
for label, kind, arg in steps:
    if kind == "import":
        for name in arg:
            try:
                importlib.import_module(name)
            except ImportError as error:
                out.append([label, {"error": repr(error)}])
                break
        else:
            out.append([label, _mem()])
    elif kind == "exec":
        exec(arg, {})
        out.append([label, _mem()])
    elif kind == "create_app":
        import gaia_app
        app = gaia_app.create_app()
        out.append([label, _mem()])
    elif kind == "health":
        client = app.test_client()
        client.get("/health/live")
        client.get("/health")
        out.append([label, _mem()])
print(json.dumps({"steps": out, "tops": sorted(_tops())}))
'''


CHILD_GEVENT = r"""
import json
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
before = rss()
from gevent import monkey
monkey.patch_all()
print(json.dumps([before, rss()]))
"""

# Libraries a web worker does not load: what their users would import.
NOT_LOADED_CODE = {
    "celery": "from celery import Celery, Task\nimport celery.signals",
    "kombu": "from kombu import Connection, Exchange, Queue",
    "psycopg": "import psycopg",
    "redis": "import redis\nimport redis.client",
}


def run_child(code: str, root: Path, env: dict[str, str], *argv: str, timeout: float = 40):
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def direct_imports(root: Path, module_names: list[str]) -> set[str]:
    """Top-level packages that these modules of the repository import themselves (module or
    function level, read from their source)."""
    import ast

    tops: set[str] = set()
    for name in module_names:
        base = root.joinpath(*name.split("."))
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        try:
            tree = ast.parse(path.read_text(), str(path))
        except (OSError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.partition(".")[0])
    return tops


def run_imports(args: argparse.Namespace, root: Path, tmp: Path, database_url: str | None,
                deadline: float) -> dict:
    instance = tmp / "instance"
    env = clean_env(GAIA_INSTANCE_PATH=str(instance), ENVIRONMENT="local", DATABASE_URL=database_url,
                    REDIS_URL=args.redis_url, LOG_LEVEL="WARNING")
    repeat = max(1, args.repeat)
    log("discovering what create_app() loads ...")
    found = run_child(CHILD_DISCOVER, root, env)
    bare = run_child(CHILD_BARE, root, env)
    stdlib = set(sys.stdlib_module_names)
    baseline_tops = set(found["baseline_tops"])
    loaded, subs = found["order"], found["submodules"]
    app_tops = ("gaia_app", "blueprints")
    third_party = [t for t in loaded if t not in stdlib and t not in app_tops and not t.startswith("_")]
    not_in_bare = [t for t in loaded if t not in set(bare["tops"]) and t not in app_tops]
    app_modules = [n for t in app_tops for n in subs.get(t, [])]
    # Every library module create_app() loads (third-party and standard library); importing
    # them in this order recreates the worker's set of libraries without the app.
    lib_tops = [t for t in loaded if t not in app_tops]
    # The packages the app imports itself: the roots of the import graph.
    roots = [t for t in lib_tops if t in direct_imports(root, app_modules + ["wsgi"])]

    def measure(steps: list) -> tuple[list[dict], set[str]]:
        """Median over `repeat` fresh interpreters of the memory after each step, and the
        top-level modules present at the end."""
        runs = [run_child(CHILD_MEASURE, root, env, json.dumps(steps)) for _ in range(repeat)]
        for run in runs:
            for label, mem in run["steps"]:
                if "error" in mem:
                    raise RuntimeError(f"{label}: {mem['error']}")
        steps_out = runs[0]["steps"]
        medians = [{key: statistics.median(run["steps"][i][1][key] for run in runs)
                    for key in steps_out[i][1]} for i in range(len(steps_out))]
        return medians, set(runs[0]["tops"])

    def import_step(tops: list[str]) -> list:
        return ["libraries", "import", [n for t in lib_tops if t in set(tops) for n in subs[t]]]

    def alone(module: str) -> dict:
        if module in subs:
            step = [module, "import", subs[module]]
        elif module in NOT_LOADED_CODE:
            step = [module, "exec", NOT_LOADED_CODE[module]]
        else:
            step = [module, "import", [module]]
        try:
            (base, after), tops = measure([step])
        except RuntimeError as error:
            return {"module": module, "error": str(error)}
        return {"module": module, "kind": "library", "loaded_by_create_app": module in loaded,
                "rss_delta": (after["rss_kib"] - base["rss_kib"]) / MIB,
                "anon_delta": (after["anon_kib"] - base["anon_kib"]) / MIB,
                "new_modules": int(after["modules"] - base["modules"]),
                "closure": sorted(tops - baseline_tops)}

    # gevent is the baseline itself (its own row below); psycopg_binary loads only after psycopg.
    modules = [m for m in dict.fromkeys(REQUIRED_MODULES + third_party)
               if m not in ("gevent", "psycopg_binary")]
    closure_only = [t for t in roots if t not in modules]  # standard-library roots
    log(f"measuring {len(modules)} modules alone, then {len(roots)} direct imports "
        f"and {len(GROUPS)} groups left out ...")
    workers = max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        per_module = list(pool.map(alone, modules))
        closures = {r["module"]: set(r["closure"]) for r in per_module if "closure" in r}
        closures.update({r["module"]: set(r["closure"]) for r in pool.map(alone, closure_only)
                         if "closure" in r})
        if time.monotonic() > deadline:
            raise Deadline()

        # Loaded while create_app() runs, not by any import (e.g. sqlite3 by the engine): kept.
        reached = set().union(*(closures.get(r, {r}) | {r} for r in roots))
        runtime_only = {t for t in lib_tops if t not in reached}

        def kept(deferred: set[str]) -> list[str]:
            needed: set[str] = set(runtime_only)
            for r in roots:
                if r not in deferred:
                    needed |= closures.get(r, {r}) | {r}
            return [t for t in lib_tops if t in needed]

        def rss_of(tops: list[str]) -> float:  # RSS of a fresh import is steady: one run
            done = run_child(CHILD_MEASURE, root, env, json.dumps([import_step(tops)]))
            return done["steps"][1][1]["rss_kib"] / MIB

        all_future = pool.submit(rss_of, lib_tops)
        check_future = pool.submit(rss_of, kept(set()))
        root_futures = {r: pool.submit(rss_of, kept({r})) for r in roots}
        group_futures = {g: (names, pool.submit(rss_of, kept(set(names))))
                         for g, names in GROUPS.items() if any(n in roots for n in names)}
        gevent_runs = [pool.submit(run_child, CHILD_GEVENT, root, env) for _ in range(repeat)]
        all_rss = all_future.result()
        check_rss = check_future.result()
        for row in per_module:
            if row["module"] in root_futures:
                row["saved_if_deferred"] = all_rss - root_futures[row["module"]].result()
        groups = []
        for group, (names, future) in group_futures.items():
            gone = [t for t in lib_tops if t not in set(kept(set(names)))]
            groups.append({"group": group, "saved_rss": all_rss - future.result(), "no_longer_loaded": gone})
        gevent = [f.result() for f in gevent_runs]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # queued children never start
        raise
    pool.shutdown()
    if time.monotonic() > deadline:
        raise Deadline()

    cumulative_steps = [["libraries (all create_app() loads)", "import",
                         [n for t in lib_tops for n in subs[t]]],
                        ["gaia_app.* + blueprints.*", "import", app_modules],
                        ["create_app()", "create_app", None],
                        ["GET /health/live + /health", "health", None]]
    cumulative = []
    for (label, *_), mem in zip([["baseline"]] + cumulative_steps, measure(cumulative_steps)[0]):
        cumulative.append({"step": label, "rss": mem["rss_kib"] / MIB, "anon": mem["anon_kib"] / MIB,
                           "modules": int(mem["modules"])})
    gevent_before = statistics.median(g[0] for g in gevent) / MIB
    gevent_after = statistics.median(g[1] for g in gevent) / MIB
    specials = [
        ("gevent + monkey.patch_all() (the baseline itself, over a bare interpreter)",
         gevent_after - gevent_before),
        ("gaia_app.* + blueprints.* (imported after all the libraries)",
         cumulative[2]["rss"] - cumulative[1]["rss"]),
        ("create_app() itself (after all imports)", cumulative[3]["rss"] - cumulative[2]["rss"]),
        ("first GET /health (alembic reads migrations/)", cumulative[4]["rss"] - cumulative[3]["rss"]),
    ]
    for label, delta in specials:
        per_module.append({"module": label, "kind": "step", "rss_delta": delta, "anon_delta": None,
                           "new_modules": None, "loaded_by_create_app": True})
    return {
        "interpreter_rss": gevent_before,
        "loaded_top_level": loaded,
        "third_party": third_party,
        "direct_imports": roots,
        "chains": {t: found["chains"].get(t, []) for t in loaded},
        "not_in_bare_flask": not_in_bare,
        "bare_flask_rss": bare["mem"]["rss_kib"] / MIB,
        "per_module": sorted(per_module, key=lambda r: -r.get("rss_delta", -1)),
        "cumulative": cumulative,
        "all_libraries_rss": all_rss,
        "closure_check_rss": check_rss,
        "runtime_only": sorted(runtime_only),
        "groups": groups,
    }


def render_imports(result: dict, top: int) -> str:
    base = result["cumulative"][0]["rss"]
    lines = [f"Bare interpreter {result['interpreter_rss']:.1f} MiB RSS; baseline (+ gevent "
             f"monkey.patch_all()) {base:.1f} MiB; a bare Flask app on that baseline: "
             f"{result['bare_flask_rss']:.1f} MiB.", "",
             f"Each alone over the baseline (top {top}). `RSS Δ` includes the module's own "
             "dependencies, so rows overlap. `saved if deferred` (for the packages the app imports "
             "itself) is what the worker's libraries lose without it and whatever only it needs:", "",
             "| # | module | RSS Δ MiB | anon Δ MiB | saved if deferred MiB | modules | loaded by create_app() |",
             "|---:|---|---:|---:|---:|---:|---|"]
    rows = [r for r in result["per_module"] if "rss_delta" in r and r.get("kind") == "library"]
    rows = rows[:top] + [r for r in result["per_module"] if r.get("kind") == "step"]
    for index, r in enumerate(rows, 1):
        uss = "" if r["anon_delta"] is None else f"{r['anon_delta']:.1f}"
        saved = f"{r['saved_if_deferred']:.1f}" if "saved_if_deferred" in r else ""
        count = "" if r["new_modules"] is None else str(r["new_modules"])
        lines.append(f"| {index} | {r['module']} | {r['rss_delta']:.1f} | {uss} | {saved} | {count} "
                     f"| {'yes' if r['loaded_by_create_app'] else 'no'} |")
    missing = [f"{r['module']} ({r['error'].splitlines()[0]})" for r in result["per_module"] if "error" in r]
    if missing:
        lines.append(f"\nNot measured: {', '.join(missing)}")
    lines += ["", "Cumulative, in one interpreter:", "",
              "| step | RSS MiB | Δ vs previous | anon MiB | modules |", "|---|---:|---:|---:|---:|"]
    previous = None
    for step in result["cumulative"]:
        delta = "" if previous is None else f"{step['rss'] - previous:+.1f}"
        lines.append(f"| {step['step']} | {step['rss']:.1f} | {delta} | {step['anon']:.1f} | {step['modules']} |")
        previous = step["rss"]
    lines += ["", f"Deferring what the app imports itself (its libraries: "
              f"{result['all_libraries_rss']:.1f} MiB in one interpreter; the same rebuilt from "
              f"each direct import's closure: {result['closure_check_rss']:.1f} MiB):", "",
              "| deferred | RSS saved MiB | no longer loaded |", "|---|---:|---|"]
    for g in result["groups"]:
        lines.append(f"| {g['group']} | {g['saved_rss']:.1f} | {', '.join(g['no_longer_loaded'])} |")
    lines += ["", "Top-level modules create_app() loads that a bare Flask app does not, "
              "with the chain that imports each first:", ""]
    for name in result["not_in_bare_flask"]:
        chain = " > ".join(result["chains"].get(name, [])) or "(loaded from C by the package above)"
        lines.append(f"- {name}: {chain}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imports", action="store_true", help="per-import breakdown instead of servers")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument("--database-url", help="Gaia's DATABASE_URL (loopback only); default SQLite")
    parser.add_argument("--postgres", action="store_true",
                        help="create (and drop) a throw-away database gaia_mem_<random>")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="maintenance URL for --postgres")
    parser.add_argument("--redis-url", help="Gaia's REDIS_URL, e.g. redis://127.0.0.1:6379/14")
    parser.add_argument("--gaia-app", default="wsgi:app",
                        help="gunicorn target for Gaia (a variant module of your own); "
                             "migrations and create-admin still use `flask --app wsgi`")
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY (default 2)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before reading")
    parser.add_argument("--min-warm", type=int, default=2, help="warm-up connections per worker")
    parser.add_argument("--repeat", type=int, default=3, help="--imports: runs per figure (median)")
    parser.add_argument("--top", type=int, default=20, help="--imports: rows shown")
    parser.add_argument("--timeout", type=float, default=110.0, help="give up after this many seconds")
    parser.add_argument("--root", help="repository to run (default: the current directory if it "
                                       "holds wsgi.py, else this script's repository)")
    args = parser.parse_args(argv)
    if args.database_url and args.postgres:
        parser.error("--database-url and --postgres exclude each other")
    if args.database_url:
        require_loopback(args.database_url, "--database-url")
    if args.redis_url:
        require_loopback(args.redis_url, "--redis-url")

    root = find_root(args.root)
    started = time.monotonic()
    deadline = started + args.timeout

    def on_alarm(signum, frame):
        raise Deadline()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 5)
    def on_term(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, on_term)

    tmp = Path(tempfile.mkdtemp(prefix="gaia-mem-"))
    database = None
    code = 0
    try:
        if args.postgres:
            database = ThrowAwayDatabase(args.pg_url)
            log(f"created database {database.name}")
        database_url = database.url if database else args.database_url
        meta = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git_commit(root), "dirty": git_dirty(root), "root": str(root),
            "python": sys.version.split()[0], "workers": args.workers,
            "database": "postgresql" if database_url else "sqlite",
            "redis": bool(args.redis_url),
        }
        if args.imports:
            result = run_imports(args, root, tmp, database_url, deadline)
            text = render_imports(result, args.top)
        else:
            result = run_servers(args, root, tmp, database_url, deadline)
            text = render_servers(result)
        meta["seconds"] = round(time.monotonic() - started, 1)
        header = (f"{meta['date']}, commit {meta['commit']}{' (dirty)' if meta['dirty'] else ''}, "
                  f"{meta['database']}{', redis' if meta['redis'] else ''}, "
                  f"{args.workers} gevent workers, Python {meta['python']}, {meta['seconds']} s")
        if args.json:
            log(header + "\n\n" + text)
            print(json.dumps({"meta": meta, "result": result}, indent=2))
        else:
            print(header + "\n\n" + text)
    except Deadline:
        log(f"gave up after {args.timeout:.0f} s")
        code = 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        log(f"failed: {error}")
        code = 1
    finally:
        signal.alarm(0)
        if database is not None:
            database.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
