"""What the client-library checks share: the command line, the fakes' control, a recording
relay in front of Gaia, the expected shapes, and PASS/FAIL bookkeeping.

Every request a library sends goes through `Recorder`, a relay on 127.0.0.1 that forwards
it to Gaia unchanged (streams included, piece by piece) and keeps the request body and the
start of the answer, so a failing check shows exactly what the library sent and what came
back. Nothing here contacts anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import traceback
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

# Nothing from the shell steers the libraries: no proxy, key, URL or telemetry of their own.
for _name in [n for n in os.environ if n.upper() in (
        "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY") or n.startswith(("OPENAI_", "ANTHROPIC_", "LITELLM_"))]:
    del os.environ[_name]
os.environ.update(NO_PROXY="*", no_proxy="*", LITELLM_LOCAL_MODEL_COST_MAP="True",
                  LITELLM_TELEMETRY="False", TIKTOKEN_CACHE_DIR=tempfile.gettempdir() + "/tiktoken-none",
                  LOGFIRE_IGNORE_NO_CONFIG="1")

from pydantic import BaseModel  # noqa: E402

LOCAL, GPT, CLAUDE = "gaia-local", "gpt-4o-mini", "claude-sonnet-4-5"
MODELS = [LOCAL, GPT, CLAUDE]
ASK_WEATHER = "What is the weather in Paris for 3 days?"
ASK_NPC = "Describe a knight named Ada at level 7."
ADA = {"name": "Ada", "level": 7}
WEATHER_CALL = ["get_weather", {"city": "Paris", "days": 3}]
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                  "required": ["city", "days"]}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city, for a number of days.",
    "parameters": WEATHER_SCHEMA}}
DEFAULT_INFO = Path(tempfile.gettempdir()) / "gaia-client-checks.json"


class Npc(BaseModel):
    name: str
    level: int


def get_weather(city: str, days: int) -> str:
    """Current weather for a city, for a number of days."""
    return f"Sunny in {city} for {days} days"


class CheckFailed(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def expect_weather_args(name: str, args) -> None:
    """A call of get_weather with a non-empty string city and an integer days."""
    if isinstance(args, str):
        args = json.loads(args)
    expect(name == "get_weather", f"tool called: {name!r}")
    expect(isinstance(args, dict), f"arguments are not an object: {args!r}")
    expect(isinstance(args.get("city"), str) and args["city"] != "", f"city: {args.get('city')!r}")
    expect(is_int(args.get("days")), f"days: {args.get('days')!r}")


def expect_text(text, what: str = "final answer") -> None:
    expect(isinstance(text, str) and text.strip() != "", f"{what} is not a non-empty text: {text!r}")


def expect_npc(value) -> None:
    expect(isinstance(value, Npc), f"not an Npc: {type(value).__name__} {value!r}")
    expect(isinstance(value.name, str) and is_int(value.level), f"Npc fields: {value!r}")


# -- the fakes behind Gaia -----------------------------------------------------------------


class Control:
    """serve.py's control server: how the fakes answer, and what they were sent."""

    def __init__(self, url: str | None):
        self.url = url
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, path: str, body=None):
        if not self.url:
            return None
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        with self._opener.open(request, timeout=10) as response:
            return json.loads(response.read())

    def answer(self, openai: dict | None = None, anthropic: dict | None = None) -> None:
        """Reset both fakes, then set their Behaviour (the same for both when only one is given)."""
        self._call("/reset", {})
        openai = openai or {}
        self._call("/behaviour", {"openai": openai, "anthropic": openai if anthropic is None else anthropic})

    def requests(self) -> dict:
        return self._call("/requests") or {}


def tools_answer() -> dict:
    """The fakes call get_weather (Paris, 3 days), without text; once the tool's result is in,
    they answer in text (serve.py's fakes drop the calls then)."""
    return {"tool_calls": [WEATHER_CALL]}


def npc_answer(openai_by_tool: str | None = None) -> tuple[dict, dict]:
    """(OpenAI's, Anthropic's) Behaviour for an Npc: a JSON text from OpenAI, or a call of the
    tool named `openai_by_tool`; from Anthropic a call of whichever tool Gaia forces (named
    after the schema, or `json_object`): Gaia asks Anthropic for structured answers that way."""
    openai = {"tool_calls": [[openai_by_tool, ADA]]} if openai_by_tool else {"reply": json.dumps(ADA)}
    anthropic = {"tool_calls": [["Npc", ADA], ["json_object", ADA], ["npc", ADA]]}
    return openai, anthropic


# -- the recording relay -------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    path: str
    request: bytes
    status: int = 0
    response: bytearray = field(default_factory=bytearray)

    KEEP = 6000

    def show(self) -> str:
        try:
            body = json.dumps(json.loads(self.request), indent=None)
        except ValueError:
            body = self.request.decode(errors="replace")
        answer = bytes(self.response[: self.KEEP]).decode(errors="replace")
        more = f" … ({len(self.response)} bytes)" if len(self.response) > self.KEEP else ""
        return f"    > {self.method} {self.path}\n    > {body}\n    < {self.status}\n    < {answer}{more}"


class _QuietServer(ThreadingHTTPServer):
    """A client closing a kept-alive connection is normal here; anything else is printed."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Recorder:
    """A relay on 127.0.0.1 in front of Gaia that keeps every exchange."""

    def __init__(self, target: str):
        split = urlsplit(target)
        self.host, self.port = split.hostname, split.port or 80
        self.prefix = split.path.rstrip("/")
        self.exchanges: list[Exchange] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                recorder._relay(self)

            do_GET = do_DELETE = do_PUT = do_POST

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"

    def mark(self) -> int:
        return len(self.exchanges)

    def since(self, mark: int) -> list[Exchange]:
        return self.exchanges[mark:]

    def _relay(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        exchange = Exchange(h.command, h.path, body)
        self.exchanges.append(exchange)
        skip = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}
        headers = {k: v for k, v in h.headers.items() if k.lower() not in skip}
        upstream = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            upstream.request(h.command, h.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            exchange.status = response.status
            h.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                    h.send_header(name, value)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            while True:
                piece = response.read1(65536)
                if not piece:
                    break
                exchange.response += piece
                h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
        except OSError as exc:
            exchange.status = -1
            exchange.response += f"relay error: {exc}".encode()
            h.close_connection = True
        finally:
            upstream.close()


# -- bookkeeping ---------------------------------------------------------------------------


class Checks:
    """Runs checks, prints PASS/FAIL per check, and (on FAIL) what went over the wire."""

    def __init__(self, library: str, version: str, description: str):
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--base-url", help="Gaia's /v1 base URL, e.g. http://127.0.0.1:8000/v1")
        parser.add_argument("--key", help="a Gaia API key")
        parser.add_argument("--info", type=Path, default=DEFAULT_INFO,
                            help=f"serve.py's JSON file (default {DEFAULT_INFO}); --base-url/--key win")
        parser.add_argument("--control", help="serve.py's control URL (default: from --info)")
        parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
        parser.add_argument("--only", help="run only checks whose name contains this")
        parser.add_argument("--results", type=Path, help="append the results as JSON lines here")
        parser.add_argument("--direct", action="store_true", help="no recording relay: talk to Gaia directly")
        args = parser.parse_args()
        info = json.loads(args.info.read_text()) if args.info.exists() else {}
        self.gaia_url = args.base_url or info.get("base_url")
        self.key = args.key or info.get("key")
        if not self.gaia_url or not self.key:
            parser.error(f"give --base-url and --key, or start serve.py (it writes {args.info})")
        self.control = Control(args.control or info.get("control_url"))
        self.recorder = None if args.direct else Recorder(self.gaia_url)
        self.base_url = self.recorder.base_url if self.recorder else self.gaia_url
        self.models = [m for m in args.models.split(",") if m]
        self.only, self.results_path = args.only, args.results
        self.library, self.version = library, version
        self.results: list[dict] = []
        print(f"{library} {version} against {self.gaia_url}", flush=True)

    def run(self, model: str, name: str, check) -> None:
        """check() raises on failure."""
        if self.only and self.only not in name:
            return
        mark = self.recorder.mark() if self.recorder else 0
        try:
            check()
            status, error = "PASS", ""
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            status = "FAIL"
            error = f"{type(exc).__name__}: {exc}".strip()
            if len(error) > 1500:
                error = error[:1500] + " …"
            tb = traceback.format_exc(limit=-3)
        line = f"{status:5} {self.library} {model:18} {name}"
        print(line + (f"\n      {error}" if error else ""), flush=True)
        if status == "FAIL":
            print("      " + tb.strip().replace("\n", "\n      "), flush=True)
            if self.recorder:
                for exchange in self.recorder.since(mark)[-3:]:
                    print(exchange.show(), flush=True)
        self.results.append({"library": self.library, "version": self.version, "model": model,
                             "check": name, "status": status, "error": error})

    def finish(self) -> int:
        failed = [r for r in self.results if r["status"] == "FAIL"]
        counts = {s: sum(r["status"] == s for r in self.results) for s in ("PASS", "FAIL")}
        print(f"{self.library} {self.version}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
              flush=True)
        if self.results_path:
            with open(self.results_path, "a") as out:
                for result in self.results:
                    out.write(json.dumps(result) + "\n")
        return 1 if failed or not self.results else 0


def version_of(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def main_guard(run) -> None:
    try:
        sys.exit(run())
    except KeyboardInterrupt:
        sys.exit(130)
