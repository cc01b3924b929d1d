"""Gaia under gunicorn, with loopback fakes of OpenAI and Anthropic behind it, for the
client-library checks in this folder.

Starts, each on a free port of 127.0.0.1:
  - a FakeOpenAI (models gpt-4o-mini, gpt-4o) and a FakeAnthropic (claude-sonnet-4-5,
    claude-haiku-4-5), from tests/fakes/llm_servers.py;
  - a small control server through which a check sets how the fakes answer and reads what
    they were sent (below);
  - Gaia itself: `python -m gunicorn -c gunicorn.conf.py wsgi:app` with the Python of
    the repository's .venv, after `flask db upgrade` and `flask create-admin` on a fresh SQLite
    database in a temporary folder.

Prints the base URL, the admin key and the control URL, writes them as JSON to --info, and
runs until SIGTERM or SIGINT, which stop gunicorn (its whole process group), the fakes and
the control server, and remove the temporary folder (unless --keep).

The fakes answer as their `Behaviour` says (tests/fakes/llm_servers.py), with one addition
that lets a client library run a whole tool loop in one call: a request whose conversation
ends with tool results gets an answer in text, without the Behaviour's tool calls (a tool
the request forces is still called, with arguments made from its schema).

Control server (JSON in, JSON out):
  POST /reset                         both fakes back to the default Behaviour, records cleared
  POST /behaviour {"openai": {...}, "anthropic": {...}}
                                      the Behaviour's fields, e.g. {"reply": "..."} or
                                      {"tool_calls": [["get_weather", {"city": "Paris", "days": 3}]]}
  GET  /requests                      {"openai": [...], "anthropic": [...]}: every request
                                      each fake received (method, path, headers, json)

Usage (from anywhere; the repository root is found from this file):
  .venv/bin/python scripts/client_checks/serve.py --info /tmp/clients/server.json   (from the repository root)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.llm_servers import Behaviour, FakeAnthropic, FakeOpenAI  # noqa: E402

GAIA_PYTHON = ROOT / ".venv" / "bin" / "python"
OPENAI_KEY = "sk-fake-openai"
ANTHROPIC_KEY = "sk-ant-fake"
ADMIN_EMAIL = "admin@example.com"
PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
READY_TIMEOUT = 60.0


def log(message: str) -> None:
    print(f"[serve {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- fakes that end a tool loop ------------------------------------------------------------


def _ends_with_tool_results(record: dict) -> bool:
    body = record.get("json")
    messages = body.get("messages") if isinstance(body, dict) else None
    if record.get("method") != "POST" or not isinstance(messages, list) or not messages:
        return False
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    if last.get("role") in ("tool", "function"):  # OpenAI's shape
        return True
    content = last.get("content")  # Anthropic's: a user message of tool_result blocks
    return last.get("role") == "user" and isinstance(content, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content)


class _AfterToolsInText:
    def _take(self, record: dict) -> Behaviour:
        behaviour = super()._take(record)
        if behaviour.tool_calls and _ends_with_tool_results(record):
            return dataclasses.replace(behaviour, tool_calls=None)
        return behaviour


class LoopOpenAI(_AfterToolsInText, FakeOpenAI):
    pass


class LoopAnthropic(_AfterToolsInText, FakeAnthropic):
    pass


# -- control server ------------------------------------------------------------------------


def _behaviour(fields: dict) -> Behaviour:
    fields = dict(fields)
    if fields.get("tool_calls") is not None:
        fields["tool_calls"] = [tuple(call) for call in fields["tool_calls"]]
    if fields.get("error") is not None:
        fields["error"] = tuple(fields["error"])
    return Behaviour(**fields)


def control_server(fakes: dict) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, obj) -> None:
            data = json.dumps(obj, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path != "/requests":
                return self._answer(404, {"error": "unknown path"})
            self._answer(200, {name: list(fake.requests) for name, fake in fakes.items()})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw) if raw else {}
                if self.path == "/reset":
                    for fake in fakes.values():
                        fake.reset()
                elif self.path == "/behaviour":
                    for name, fields in body.items():
                        fakes[name].behaviour = _behaviour(fields or {})
                else:
                    return self._answer(404, {"error": "unknown path"})
            except (ValueError, KeyError, TypeError) as exc:
                return self._answer(400, {"error": f"{type(exc).__name__}: {exc}"})
            self._answer(200, {"ok": True})

        def log_message(self, format, *args):  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    return server


# -- Gaia ----------------------------------------------------------------------------------


def gaia_env(workdir: Path, port: int, oai: FakeOpenAI, ant: FakeAnthropic) -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env.update(
        HOST="127.0.0.1", PORT=str(port),
        DATABASE_URL=f"sqlite:///{workdir / 'gaia.db'}", GAIA_INSTANCE_PATH=str(workdir),
        ENVIRONMENT="local",
        OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=oai.url + "/v1",
        ANTHROPIC_API_KEY=ANTHROPIC_KEY, ANTHROPIC_BASE_URL=ant.url,
        NO_PROXY="*", RATE_LIMIT_DEFAULT="100000/minute",
    )
    return env


def flask_cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(GAIA_PYTHON), "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def admin_key(env: dict[str, str]) -> str:
    out = flask_cli(env, "create-admin", "--email", ADMIN_EMAIL)
    for line in out.splitlines():
        if line.startswith("API key:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"create-admin printed no 'API key:' line:\n{out}")


class Gunicorn:
    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(GAIA_PYTHON), "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the workers
        )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_live(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with opener.open(self.url + "/health/live", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"/health/live did not answer in {READY_TIMEOUT:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


class Stop(Exception):
    pass


def _on_signal(signum, _frame):
    raise Stop(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--info", type=Path, default=Path(tempfile.gettempdir()) / "gaia-client-checks.json",
                        help="where to write the base URL, key and control URL as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (database, logs)")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="gaia-client-checks-"))
    oai = LoopOpenAI(models=("gpt-4o-mini", "gpt-4o"), api_key=OPENAI_KEY)
    ant = LoopAnthropic(models=("claude-sonnet-4-5", "claude-haiku-4-5"), api_key=ANTHROPIC_KEY)
    control = gunicorn = None
    try:
        oai.start()
        ant.start()
        control = control_server({"openai": oai, "anthropic": ant})
        control_url = f"http://127.0.0.1:{control.server_address[1]}"
        for attempt in range(3):
            env = gaia_env(workdir, free_port(), oai, ant)
            if attempt == 0:
                flask_cli(env, "db", "upgrade")
                key = admin_key(env)
            gunicorn = Gunicorn(env, workdir / f"gunicorn-{env['PORT']}.log")
            try:
                gunicorn.wait_live()
                break
            except RuntimeError:
                taken = "Connection in use" in gunicorn.tail()
                gunicorn.stop()
                if not taken or attempt == 2:
                    raise
        info = {"base_url": gunicorn.url + "/v1", "key": key, "control_url": control_url,
                "openai_fake": oai.url, "anthropic_fake": ant.url, "workdir": str(workdir),
                "gunicorn_pid": gunicorn.proc.pid, "serve_pid": os.getpid()}
        args.info.parent.mkdir(parents=True, exist_ok=True)
        args.info.write_text(json.dumps(info, indent=2))
        print(f"base URL:    {info['base_url']}", flush=True)
        print(f"API key:     {key}", flush=True)
        print(f"control URL: {control_url}", flush=True)
        print(f"written to:  {args.info}", flush=True)
        log(f"gunicorn master pid {gunicorn.proc.pid}, log {gunicorn.log_path}; stop with SIGTERM or Ctrl-C")
        while True:
            time.sleep(1)
            if gunicorn.proc.poll() is not None:
                log(f"gunicorn exited with {gunicorn.proc.returncode}:\n{gunicorn.tail()}")
                return 1
    except Stop as stop:
        log(f"{stop}: stopping")
        return 0
    except RuntimeError as exc:
        log(str(exc))
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if gunicorn is not None:
            gunicorn.stop()
        if control is not None:
            control.shutdown()
            control.server_close()
        oai.stop()
        ant.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        try:
            if json.loads(args.info.read_text()).get("serve_pid") == os.getpid():
                args.info.unlink()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
