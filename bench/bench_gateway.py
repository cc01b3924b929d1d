"""The split gateway's extra hop: the chat service called directly, through the gateway, and the monolith.

Run from the repository root with the project's virtualenv (see bench/README.md, "Gateway"):

    .venv/bin/python bench/bench_gateway.py                     # ~4 min: 5 rounds x 3 s, c=1 then c=8
    .venv/bin/python bench/bench_gateway.py --profile 2000      # adds the in-process profile (~1 min)
    .venv/bin/python bench/bench_gateway.py --workers 2 --redis-url redis://127.0.0.1:6379/6
    .venv/bin/python bench/bench_gateway.py --gaia-root /tmp/gaia-abc1234 --gaia-label abc1234

What it starts, each under `python -m gunicorn -c gunicorn.conf.py wsgi:app` from the same clean
environment (HOST=127.0.0.1, a free port, WEB_CONCURRENCY=--workers, gunicorn.conf.py's worker
class: gevent) on one fresh PostgreSQL database gaia_bench_<random> (migrated with `flask db
upgrade`, an admin key from `flask create-admin`, dropped at the end whatever happens) and one
instance folder:
  - chat: SERVICE_NAME=chat;
  - gateway: SERVICE_NAME=gateway (--gateway-services), CHAT_SERVICE_URL=the chat process, and
    AUTH_SERVICE_URL / ASSET_SERVICE_URL = the monolith (set only for services the gateway does
    not serve; never called by the measured requests);
  - monolith: SERVICE_NAME=all.

Targets, measured side by side in the same alternating rounds (the order of the target and
request kinds rotates each round and is reversed every other round), with bench/loadgen.py in
this process over keep-alive connections:
  (a) `chat`: the chat process directly;
  (b) `gateway`: the gateway, which forwards to that same chat process;
  (c) `monolith`.
Request kinds: `models` (GET /api/v0.2/models, X-API-Key) and `v1` (POST /v1/chat/completions,
non-streamed, model gaia-local of the built-in offline provider, Authorization: Bearer).

Per target, kind and concurrency: median req/s, p50 and p99 over rounds; CPU per request of the
processes that served it (from /proc, master + workers; for the gateway target the gateway and
chat processes together and each apart); the load generator's CPU per request; the share of the
machine busy and "other cores". Derived: the extra hop's p50 (and p99) = gateway - chat in the
same round, median over rounds, at c=1 (target < 1.5 ms); gateway/monolith req/s at c=8
(target >= 0.5), with the min-max of the same ratio paired round by round; both also over the
quiet pairs of rounds only (neither with more than QUIET_CORES of other work on the machine).

--profile N: after the rounds, a child process with the gateway's environment (gevent patched,
as in a gevent worker) calls the gateway app as a WSGI callable (the chat process still serves
behind it), N calls per layer, 3 alternating repetitions, best by CPU; CPU and wall per call of
each step of blueprints/gateway/forwarding.py (wrapped from outside, the file is not changed),
and a CPU-clock cProfile of the forwarded requests grouped by library.

It prints tables and writes JSON to bench/results/gateway-<time>.json. Everything it starts is
stopped on exit, on failure and on Ctrl-C/SIGTERM. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.argv[1:] == ["--profile-child"] and os.environ.get("BENCH_PROFILE_GEVENT"):
    # Patched as gunicorn's gevent worker patches, before requests, urllib3 or psycopg load.
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from contextlib import ExitStack  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BENCH_RATE_LIMIT,
    DEFAULT_PG_URL,
    BenchDatabase,
    Interrupted,
    RoundTotals,
    Server,
    _loopback_url,
    _machine_jiffies,
    background_cores,
    clean_environment,
    free_port,
    git_revision,
    install_signal_handlers,
    interrupted,
    log,
    migrate_and_key,
    remove_workdir,
    results_path,
    wsgi_caller,
    write_results,
)
from bench.loadgen import LoadResult, run_load  # noqa: E402

MODELS_PATH = "/api/v0.2/models"
V1_PATH = "/v1/chat/completions"
V1_BODY = json.dumps({"model": "gaia-local", "messages": [
    {"role": "user", "content": "Say hello in five words."}]}, separators=(",", ":")).encode()
TARGET_HOP_P50_MS = 1.5  # the targets
TARGET_RPS_RATIO = 0.5
# A pair of rounds counts as quiet when neither had more than this many cores busy with work
# other than the three servers and the load generator (other jobs on a shared machine).
QUIET_CORES = 0.25
TARGETS = ("chat", "gateway", "monolith")
# The client address of the in-process calls of --profile.
LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}
PROCESSES = ("chat", "gateway", "monolith")
# The processes whose CPU a target's requests cost.
CHARGED = {"chat": ("chat",), "gateway": ("gateway", "chat"), "monolith": ("monolith",)}


# --------------------------------------------------------------------------------------------
# Requests and rounds


@dataclass(frozen=True)
class Kind:
    name: str
    method: str
    path: str
    body: bytes = b""

    def headers(self, key: str) -> dict[str, str]:
        if self.method == "GET":
            return {"X-API-Key": key}
        return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def load(self, server: Server, key: str, concurrency: int, duration: float) -> LoadResult:
        return run_load(server.base_url + self.path, concurrency=concurrency, duration=duration,
                        method=self.method, headers=self.headers(key),
                        body=self.body, timeout=15.0)


KIND_TABLE = {"models": Kind("models", "GET", MODELS_PATH),
              "v1": Kind("v1", "POST", V1_PATH, V1_BODY)}


@dataclass
class Round:
    target: str
    kind: str
    concurrency: int
    index: int
    result: LoadResult
    cpu_s: dict[str, float]  # every process's CPU during the round, charged or not
    machine_busy: float  # share of all cores busy, 0..1

    def charged_s(self, process: str | None = None) -> float:
        names = CHARGED[self.target] if process is None else (process,)
        return sum(self.cpu_s[name] for name in names)

    @property
    def other_cores(self) -> float:
        """Busy cores spent on none of the three servers nor the load generator (PostgreSQL,
        other people's work, kernel time not charged to a process)."""
        elapsed = self.result.elapsed_s or float("nan")
        counted = sum(self.cpu_s.values()) + self.result.client_cpu_s
        return max(0.0, self.machine_busy * (os.cpu_count() or 1) - counted / elapsed)

    def row(self) -> dict:
        data = self.result.to_dict()
        data.update(target=self.target, kind=self.kind, round=self.index, cpu_s=self.cpu_s,
                    machine_busy=self.machine_busy, other_cores=self.other_cores)
        return data


@dataclass
class Summary(RoundTotals):
    target: str
    kind: str
    concurrency: int
    rounds: list[Round] = field(default_factory=list)

    def cpu_us(self, process: str | None = None) -> float:
        """CPU per request of the charged processes (or of one of them), total over total."""
        ok = self.ok
        return sum(r.charged_s(process) for r in self.rounds) / ok * 1e6 if ok else float("nan")

    def client_cpu_us(self) -> float:
        ok = self.ok
        return sum(r.result.client_cpu_s for r in self.rounds) / ok * 1e6 if ok else float("nan")

    def round_median(self, value) -> float:
        values = [value(r) for r in self.rounds]
        values = [v for v in values if v == v]
        return statistics.median(values) if values else float("nan")


def measure(servers: dict[str, Server], target: str, kind: Kind, key: str, concurrency: int,
            duration: float, index: int) -> Round:
    busy0, total0 = _machine_jiffies()
    cpu0 = {name: server.cpu_seconds() for name, server in servers.items()}
    result = kind.load(servers[target], key, concurrency, duration)
    cpu1 = {name: server.cpu_seconds() for name, server in servers.items()}
    busy1, total1 = _machine_jiffies()
    busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
    return Round(target, kind.name, concurrency, index, result,
                 {name: cpu1[name] - cpu0[name] for name in servers}, busy)


def run_rounds(servers: dict[str, Server], kinds: list[Kind], key: str, concurrencies: list[int],
               rounds: int, duration: float) -> tuple[dict, list[Round]]:
    """Every (kind, target) once per round; the order rotates by one each round and is
    reversed every other round, so no pair always follows the same one."""
    units = [(kind, target) for kind in kinds for target in TARGETS]
    summaries: dict[tuple[str, str, int], Summary] = {}
    every: list[Round] = []
    for c in concurrencies:
        for kind, target in units:
            summaries[(target, kind.name, c)] = Summary(target, kind.name, c)
        for index in range(1, rounds + 1):
            shift = (index - 1) % len(units)
            order = units[shift:] + units[:shift]
            if index % 2 == 0:
                order = order[::-1]
            for kind, target in order:
                r = measure(servers, target, kind, key, c, duration, index)
                summaries[(target, kind.name, c)].rounds.append(r)
                every.append(r)
                log(f"c={c} round {index} {kind.name}/{target}: {r.result.rps:.0f} req/s, p50 "
                    f"{r.result.p50_ms:.2f} p99 {r.result.p99_ms:.2f} ms, "
                    f"{r.charged_s() / max(r.result.ok, 1) * 1e6:.0f} µs CPU/req"
                    + (f", errors {r.result.errors} {r.result.error_kinds}" if r.result.errors else ""))
    return summaries, every


# --------------------------------------------------------------------------------------------
# Derived figures and report


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a and b > 0 else float("nan")


def paired(this: Summary, other: Summary, per_round, quiet_only: bool = False) -> list[float]:
    """per_round(this round, other's round of the same index), for each index both have
    (with `quiet_only`, only where neither round had more than QUIET_CORES of other work)."""
    by_index = {r.index: r for r in other.rounds}
    values = [per_round(r, by_index[r.index]) for r in this.rounds if r.index in by_index
              and (not quiet_only or max(r.other_cores, by_index[r.index].other_cores) <= QUIET_CORES)]
    return [v for v in values if v == v]


def _spread(name: str, values: list[float]) -> dict:
    nan = float("nan")
    return {name: statistics.median(values) if values else nan, name + "_min": min(values, default=nan),
            name + "_max": max(values, default=nan), name + "_n": len(values)}


def derived(summaries: dict, kinds: list[str], concurrencies: list[int]) -> list[dict]:
    """Per kind and concurrency: the extra hop (gateway - chat, paired by round) and the req/s
    ratios gateway/monolith and gateway/chat; also over the quiet pairs of rounds only."""
    rows = []
    for kind in kinds:
        for c in concurrencies:
            a, b, m = (summaries[(t, kind, c)] for t in TARGETS)
            p50 = lambda x, y: x.result.p50_ms - y.result.p50_ms  # noqa: E731
            rps = lambda x, y: _ratio(x.result.rps, y.result.rps)  # noqa: E731
            hop99 = paired(b, a, lambda x, y: x.result.p99_ms - y.result.p99_ms)
            rows.append({
                "kind": kind, "concurrency": c,
                **_spread("hop_p50_ms", paired(b, a, p50)),
                **_spread("hop_p50_ms_quiet", paired(b, a, p50, quiet_only=True)),
                "hop_p99_ms": statistics.median(hop99) if hop99 else float("nan"),
                "rps_gateway_over_monolith": _ratio(b.median("rps"), m.median("rps")),
                **_spread("rps_gateway_over_monolith_paired", paired(b, m, rps)),
                **_spread("rps_gateway_over_monolith_quiet", paired(b, m, rps, quiet_only=True)),
                "rps_gateway_over_chat": _ratio(b.median("rps"), a.median("rps")),
                "gateway_process_cpu_us": b.cpu_us("gateway"),
                "chat_process_cpu_us_behind_gateway": b.cpu_us("chat"),
                "chat_process_cpu_us_direct": a.cpu_us("chat"),
                "cpu_gateway_path_over_monolith": _ratio(b.cpu_us(), m.cpu_us()),
            })
    return rows


def render_table(summaries: dict, kinds: list[str], concurrencies: list[int]) -> str:
    lines = ["| kind | conc. | target | req/s | p50 ms | p99 ms | CPU µs/req | of which gateway "
             "| of which chat | loadgen CPU µs/req | machine busy | other cores | errors |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in kinds:
        for c in concurrencies:
            for target in TARGETS:
                s = summaries[(target, kind, c)]
                split = target == "gateway"
                lines.append(
                    f"| {kind} | {c} | {target} | {s.median('rps'):.0f} | {_f(s.median('p50_ms'))} "
                    f"| {_f(s.median('p99_ms'))} | {_f(s.cpu_us(), 0)} "
                    f"| {_f(s.cpu_us('gateway'), 0) if split else '—'} "
                    f"| {_f(s.cpu_us('chat'), 0) if split else '—'} | {_f(s.client_cpu_us(), 0)} "
                    f"| {s.round_median(lambda r: r.machine_busy) * 100:.0f}% "
                    f"| {_f(s.round_median(lambda r: r.other_cores))} | {s.errors} |")
    return "\n".join(lines)


def render_derived(rows: list[dict]) -> str:
    lines = ["| kind | conc. | extra hop p50 ms (per round min–max) | in quiet pairs (n) "
             "| extra hop p99 ms | req/s gateway/monolith (per round min–max) | in quiet pairs (n) "
             "| req/s gateway/chat | CPU µs/req: gateway process, chat behind it, chat direct "
             "| CPU gateway path / monolith |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        hop, ratio = "hop_p50_ms", "rps_gateway_over_monolith"
        lines.append(
            f"| {r['kind']} | {r['concurrency']} | **{_f(r[hop])}** ({_f(r[hop + '_min'])}–"
            f"{_f(r[hop + '_max'])}) | {_f(r[hop + '_quiet'])} ({r[hop + '_quiet_n']}) "
            f"| {_f(r['hop_p99_ms'])} | **{_f(r[ratio])}** ({_f(r[ratio + '_paired_min'])}–"
            f"{_f(r[ratio + '_paired_max'])}) | {_f(r[ratio + '_quiet'])} ({r[ratio + '_quiet_n']}) "
            f"| {_f(r['rps_gateway_over_chat'])} | {_f(r['gateway_process_cpu_us'], 0)}, "
            f"{_f(r['chat_process_cpu_us_behind_gateway'], 0)}, {_f(r['chat_process_cpu_us_direct'], 0)} "
            f"| {_f(r['cpu_gateway_path_over_monolith'])}× |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        if r["concurrency"] == 1:
            ok = r["hop_p50_ms"] < TARGET_HOP_P50_MS
            out.append(f"{r['kind']}, c=1: the extra hop adds {_f(r['hop_p50_ms'])} ms at p50 -> "
                       f"{'meets' if ok else 'MISSES'} the < {TARGET_HOP_P50_MS} ms target")
        if r["concurrency"] == 8:
            ok = r["rps_gateway_over_monolith"] >= TARGET_RPS_RATIO
            out.append(f"{r['kind']}, c=8: the split path keeps {_f(r['rps_gateway_over_monolith'])} "
                       f"of the monolith's req/s -> {'meets' if ok else 'MISSES'} the "
                       f">= {TARGET_RPS_RATIO} target")
    return out


def render_rounds(rounds: list[Round]) -> str:
    lines = ["| conc. | round | kind | target | req/s | p50 ms | p99 ms | CPU µs/req chat, gateway, "
             "monolith | loadgen µs/req | machine busy | other cores |",
             "|---:|---:|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for r in rounds:
        ok = max(r.result.ok, 1)
        cpu = ", ".join(f"{r.cpu_s[p] / ok * 1e6:.0f}" for p in PROCESSES)
        lines.append(f"| {r.concurrency} | {r.index} | {r.kind} | {r.target} | {r.result.rps:.0f} "
                     f"| {_f(r.result.p50_ms)} | {_f(r.result.p99_ms)} | {cpu} "
                     f"| {r.result.client_cpu_s / ok * 1e6:.0f} | {r.machine_busy * 100:.0f}% "
                     f"| {_f(r.other_cores)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# In-process profile of the gateway (a child process with the gateway's environment)

# Steps of blueprints/gateway/forwarding.py, wrapped from outside when the module has them.
# `_send` calls the first three; `_body` runs while the answer is streamed back.
STEPS = (("_request_headers", "copy the request's headers"),
         ("_request_body", "read the request body"),
         ("_target", "build the service URL"),
         ("_send", "send, and read the answer's head (requests, urllib3, http.client)"),
         ("_refuse_foreign_error", "check the answer's status and type"),
         ("_relay", "the answer's headers and the Response"),
         ("_body", "stream the body back"))
GROUPS = (("blueprints/gateway/forwarding", "gateway forwarding.py"), ("/werkzeug/", "werkzeug"),
          ("/flask/", "flask"), ("/requests/", "requests"), ("/urllib3/", "urllib3"),
          ("/http/client", "http.client"), ("/email/", "email (header parsing)"),
          ("/gevent/", "gevent"), ("/logging/", "logging"), ("/gaia_app/", "gaia_app"),
          ("/typing.py", "typing (runtime Protocol isinstance checks)"),
          ("_collections_abc", "collections.abc (Mapping and MutableMapping methods)"),
          ("/urllib/parse", "urllib.parse"), ("/socket.py", "socket.py"),
          ("/blueprints/", "other blueprints"), ("/site-packages/", "other libraries"),
          ("~", "C functions (socket I/O, str, dict...)"))


def _client_callers(spec: dict) -> dict:
    """The same GET /models from this process straight to the chat process: through a pooled
    requests.Session streaming the body as the gateway does, and through http.client alone."""
    import http.client

    import requests

    session = requests.Session()
    session.trust_env = False
    url, headers = spec["chat_url"] + MODELS_PATH, {"X-API-Key": spec["key"]}

    def with_requests() -> None:
        answer = session.get(url, headers=headers, stream=True, timeout=(3, 30))
        for _ in answer.raw.stream(16 * 1024, decode_content=False):
            pass
        answer.raw.release_conn()
        if answer.status_code != 200:
            raise RuntimeError(f"chat answered {answer.status_code}")

    connection = http.client.HTTPConnection("127.0.0.1", int(spec["chat_url"].rsplit(":", 1)[1]))

    def with_http_client() -> None:
        try:
            connection.request("GET", MODELS_PATH, headers=headers)
            answer = connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
            # gunicorn closes a connection idle for 5 s (keepalive) while other layers run;
            # urllib3 notices that before it reuses one, http.client only when it fails.
            connection.close()
            connection.request("GET", MODELS_PATH, headers=headers)
            answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"chat answered {answer.status}")

    with_requests()
    with_http_client()
    return {"client_requests": with_requests, "client_http_client": with_http_client}


def _quiet_access_log(call):
    """The same call with Gaia's access line (logger gaia.request) off."""
    import logging

    logger = logging.getLogger("gaia.request")

    def quiet() -> None:
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            call()
        finally:
            logger.setLevel(level)

    return quiet


def _best_per_call(callers: dict, n: int, repetitions: int = 3) -> dict[str, dict[str, float]]:
    """Wall and CPU µs per call, best of `repetitions` by CPU, the callers alternating."""
    timing: dict[str, list[tuple[float, float]]] = {name: [] for name in callers}
    for _ in range(repetitions):
        for name, call in callers.items():
            for _ in range(min(50, n)):
                call()
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                call()
            timing[name].append(((time.perf_counter() - w0) / n * 1e6,
                                 (time.process_time() - c0) / n * 1e6))
    best = {name: min(values, key=lambda v: v[1]) for name, values in timing.items()}
    return {name: {"wall_us": w, "cpu_us": c} for name, (w, c) in best.items()}


def _wrap_steps(module, totals: dict[str, list[float]]) -> None:
    """Adds up wall and CPU seconds spent in each step that `module` has (generators: the time
    spent inside each of their steps)."""
    import functools
    import inspect

    for name, _ in STEPS:
        original = getattr(module, name, None)
        if original is None:
            continue
        totals[name] = [0.0, 0.0]
        spent = totals[name]
        if inspect.isgeneratorfunction(original):
            def wrapper(*args, _original=original, _spent=spent, **kwargs):
                inner = _original(*args, **kwargs)
                try:
                    while True:
                        w0, c0 = time.perf_counter(), time.process_time()
                        try:
                            item = next(inner)
                        except StopIteration:
                            return
                        finally:
                            _spent[0] += time.perf_counter() - w0
                            _spent[1] += time.process_time() - c0
                        yield item
                finally:
                    inner.close()
        else:
            def wrapper(*args, _original=original, _spent=spent, **kwargs):
                w0, c0 = time.perf_counter(), time.process_time()
                try:
                    return _original(*args, **kwargs)
                finally:
                    _spent[0] += time.perf_counter() - w0
                    _spent[1] += time.process_time() - c0
        setattr(module, name, functools.wraps(original)(wrapper))


def _step_times(callers: dict, n: int) -> dict:
    """µs per call of each forwarding step, for each forwarded kind (wrappers add ~2 µs each)."""
    from blueprints.gateway import forwarding

    totals: dict[str, list[float]] = {}
    _wrap_steps(forwarding, totals)
    out = {}
    for kind in ("gateway_models", "gateway_v1"):
        best = None
        for _ in range(3):
            for spent in totals.values():
                spent[0] = spent[1] = 0.0
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                callers[kind]()
            whole = ((time.perf_counter() - w0) / n * 1e6, (time.process_time() - c0) / n * 1e6)
            steps = {name: {"wall_us": v[0] / n * 1e6, "cpu_us": v[1] / n * 1e6}
                     for name, v in totals.items()}
            if best is None or whole[1] < best["whole"]["cpu_us"]:
                best = {"whole": {"wall_us": whole[0], "cpu_us": whole[1]}, "steps": steps}
        out[kind] = best
    return out


def _profile_groups(call, n: int, cpu_us: float) -> dict:
    """A CPU-clock cProfile of n calls: own time by library, as a share of the whole and as
    that share of `cpu_us` (the call's CPU without the profiler, which inflates call-heavy
    code against C functions), and the top functions."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for _ in range(n):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    groups: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        label = next((g for pattern, g in GROUPS if pattern in filename), "Python standard library")
        groups[label] = groups.get(label, 0.0) + tottime
    whole = sum(groups.values()) or float("nan")
    texts = []
    for order in ("tottime", "cumulative"):
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(order).print_stats(35)
        texts.append(buffer.getvalue())
    return {"share": {g: t / whole for g, t in sorted(groups.items(), key=lambda i: -i[1])},
            "scaled_cpu_us": {g: t / whole * cpu_us for g, t in groups.items()},
            "calls_per_request": sum(v[1] for v in stats.stats.values()) / n,
            "tottime": texts[0], "cumulative": texts[1]}


def profile_child() -> int:
    """Runs in a child with the gateway's environment; BENCH_PROFILE_SPEC says what to call."""
    spec = json.loads(os.environ["BENCH_PROFILE_SPEC"])
    n = int(spec["requests"])
    sys.path.insert(0, spec["gaia_root"])  # Gaia from the checkout being measured
    from wsgi import app

    key = spec["key"]
    callers = {
        "gateway_live": wsgi_caller(app, "GET", "/health/live", {}, environ_overrides=LOOPBACK),
        "gateway_models": wsgi_caller(app, "GET", MODELS_PATH, {"X-API-Key": key},
                                      environ_overrides=LOOPBACK),
        "gateway_v1": wsgi_caller(app, "POST", V1_PATH, KIND_TABLE["v1"].headers(key), V1_BODY,
                                  environ_overrides=LOOPBACK),
        **_client_callers(spec),
    }
    callers["gateway_models_no_access_line"] = _quiet_access_log(callers["gateway_models"])
    best = _best_per_call(callers, n)
    profiles = {name: _profile_groups(callers[name], min(n, 500), best[name]["cpu_us"])
                for name in ("gateway_models", "gateway_v1")}
    steps = _step_times(callers, n)  # last: it wraps the module's functions for good
    print(json.dumps({"best": best, "steps": steps, "profiles": profiles,
                      "gevent": bool(os.environ.get("BENCH_PROFILE_GEVENT"))}))
    return 0


def run_profile(gateway_env: dict, gaia_root: Path, key: str, chat_url: str, requests: int,
                gevent: bool, log_path: Path) -> dict:
    env = dict(gateway_env, BENCH_PROFILE_SPEC=json.dumps(
        {"requests": requests, "key": key, "chat_url": chat_url, "gaia_root": str(gaia_root)}))
    env.pop("PORT", None)
    if gevent:
        env["BENCH_PROFILE_GEVENT"] = "1"
    with open(log_path, "wb") as stderr:  # the access lines go there, as a worker's do
        completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--profile-child"],
                                   cwd=gaia_root, env=env, stdout=subprocess.PIPE, stderr=stderr,
                                   text=True, timeout=900)
    if completed.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"profile child failed ({completed.returncode}):\n{tail}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def render_profile(prof: dict) -> str:
    best = prof["best"]
    lines = ["| in-process call (gateway app as a WSGI callable) | CPU µs/call | wall µs/call |",
             "|---|---:|---:|"]
    for name, what in (("client_http_client", "GET /models to chat with http.client alone"),
                       ("client_requests", "GET /models to chat with a pooled requests.Session"),
                       ("gateway_live", "gateway GET /health/live (no forwarding)"),
                       ("gateway_models", "gateway GET /api/v0.2/models (forwarded)"),
                       ("gateway_models_no_access_line", "  the same, access line off"),
                       ("gateway_v1", "gateway POST /v1/chat/completions (forwarded)")):
        lines.append(f"| {what} | {best[name]['cpu_us']:.0f} | {best[name]['wall_us']:.0f} |")
    for kind, data in prof["steps"].items():
        lines += ["", f"| {kind}: step of forwarding.py | CPU µs/call | wall µs/call |", "|---|---:|---:|"]
        for name, what in STEPS:
            if name in data["steps"]:
                step = data["steps"][name]
                lines.append(f"| `{name}`: {what} | {step['cpu_us']:.0f} | {step['wall_us']:.0f} |")
        lines.append(f"| whole WSGI call (wrapped) | {data['whole']['cpu_us']:.0f} "
                     f"| {data['whole']['wall_us']:.0f} |")
    for kind, data in prof["profiles"].items():
        lines += ["", f"| {kind}: library (CPU-clock cProfile, own time; "
                  f"{data['calls_per_request']:.0f} function calls per request) | share "
                  "| that share of the unprofiled CPU, µs |", "|---|---:|---:|"]
        lines += [f"| {g} | {v * 100:.1f}% | {data['scaled_cpu_us'][g]:.0f} |"
                  for g, v in data["share"].items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Setup


def server_envs(args: argparse.Namespace, database_url: str, instance: Path) -> dict[str, dict]:
    """The three servers' environments (ports included): one clean base, one database."""
    base = clean_environment()
    base.update(HOST="127.0.0.1", WEB_CONCURRENCY=str(args.workers), DATABASE_URL=database_url,
                ENVIRONMENT="local", GAIA_INSTANCE_PATH=str(instance),
                RATE_LIMIT_DEFAULT=args.rate_limit)
    if args.worker_class:
        base["GUNICORN_WORKER_CLASS"] = args.worker_class
    if args.redis_url:
        base["REDIS_URL"] = args.redis_url
    if args.log_level:
        base["LOG_LEVEL"] = args.log_level
    if args.gaia_root != ROOT:  # bytecode of the other checkout goes elsewhere than its tree
        base["PYTHONPYCACHEPREFIX"] = str(instance.parent / "pycache")
    ports = {name: free_port() for name in PROCESSES}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    envs = {"chat": dict(base, SERVICE_NAME="chat"),
            "monolith": dict(base, SERVICE_NAME="all"),
            "gateway": dict(base, SERVICE_NAME=args.gateway_services, CHAT_SERVICE_URL=url["chat"])}
    served = set(args.gateway_services.split(","))
    for service in ("auth", "asset"):
        if service not in served:  # required by the start-up check, never called here
            envs["gateway"][f"{service.upper()}_SERVICE_URL"] = url["monolith"]
    for name in PROCESSES:
        envs[name]["PORT"] = str(ports[name])
    return {"base": base, **envs}


def check_same_body(servers: dict[str, Server], key: str) -> int:
    """The gateway relays the chat service's answer untouched: the same bytes from both."""
    bodies = {}
    for name in ("chat", "gateway"):
        request = urllib.request.Request(servers[name].base_url + MODELS_PATH,
                                         headers={"X-API-Key": key})
        with urllib.request.urlopen(request, timeout=10) as response:
            bodies[name] = response.read()
    if bodies["chat"] != bodies["gateway"]:
        raise RuntimeError("the gateway's GET /models body differs from the chat service's")
    return len(bodies["chat"])


def start_servers(envs: dict, args: argparse.Namespace, workdir: Path, cleanup: ExitStack,
                  key: str) -> dict[str, Server]:
    servers = {name: Server(name, "wsgi:app", envs[name], int(envs[name]["PORT"]),
                            workdir / f"{name}.log", cwd=args.gaia_root) for name in PROCESSES}
    for name in ("chat", "monolith", "gateway"):
        cleanup.callback(servers[name].stop)
        servers[name].start()
    for name in ("chat", "monolith", "gateway"):
        servers[name].wait_ready(MODELS_PATH, {"X-API-Key": key}, args.workers)
    log(f"all three answer 200 on {MODELS_PATH}; the gateway relays the same "
        f"{check_same_body(servers, key)} bytes as the chat service")
    return servers


def warm_up(servers: dict, kinds: list[Kind], key: str, concurrency: int, seconds: float) -> None:
    for kind in kinds:
        for target in TARGETS:
            result = kind.load(servers[target], key, concurrency, seconds)
            if result.errors or not result.ok:
                raise RuntimeError(f"warm-up of {kind.name}/{target} failed: {result.summary()}")
            log(f"warm-up {kind.name}/{target}: {result.summary()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The split gateway's extra hop against the chat "
                                     "service called directly and against the monolith.")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per round (3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per target, kind and concurrency (5)")
    parser.add_argument("--concurrency", default="1,8", help="comma list, measured in turn (1,8)")
    parser.add_argument("--kinds", default="models,v1", help="request kinds: models, v1 (both)")
    parser.add_argument("--workers", type=int, default=1, help="gunicorn workers per server (1)")
    parser.add_argument("--worker-class", default=None,
                        help="GUNICORN_WORKER_CLASS (default: gunicorn.conf.py's, gevent)")
    parser.add_argument("--gateway-services", default="gateway",
                        help="the gateway's SERVICE_NAME (gateway; or e.g. gateway,auth,asset)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target and kind (2)")
    parser.add_argument("--redis-url", type=_loopback_url, default=None,
                        help="REDIS_URL for every server (default: none)")
    parser.add_argument("--rate-limit", default=BENCH_RATE_LIMIT, help="RATE_LIMIT_DEFAULT")
    parser.add_argument("--log-level", default=None, help="LOG_LEVEL (default: the app's, INFO)")
    parser.add_argument("--pg-url", type=_loopback_url,
                        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help=f"maintenance database URL (env BENCH_PG_URL; {DEFAULT_PG_URL})")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after the rounds, N in-process calls per layer of the gateway (0: off)")
    parser.add_argument("--profile-no-gevent", action="store_true",
                        help="profile without gevent's monkey-patching")
    parser.add_argument("--gaia-root", type=Path, default=ROOT,
                        help="the Gaia checkout to run (default: this one), e.g. a `git archive` export")
    parser.add_argument("--gaia-label", default=None, help="what to call --gaia-root in the report")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results (default bench/results/gateway-<time>.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.replace(" ", "").split(",") if c]
    args.kinds = [k for k in args.kinds.replace(" ", "").split(",") if k]
    args.gaia_root = args.gaia_root.resolve()
    if any(k not in KIND_TABLE for k in args.kinds) or not args.kinds:
        parser.error(f"--kinds: a comma list of {', '.join(KIND_TABLE)}")
    if args.rounds < 1 or args.duration <= 0 or not args.concurrency or min(args.concurrency) < 1:
        parser.error("rounds, duration and concurrency must be positive")
    if "gateway" not in args.gateway_services.split(",") or "chat" in args.gateway_services.split(","):
        parser.error("--gateway-services must name gateway and not chat")
    if not (args.gaia_root / "wsgi.py").is_file():
        parser.error(f"--gaia-root {args.gaia_root}: no wsgi.py there")
    return args


# --------------------------------------------------------------------------------------------
# Main


def report(args, summaries, rounds, rows, context: dict, profile: dict | None) -> Path:
    print()
    print(f"Gaia {context['revision']}, {context['started_at']:%Y-%m-%d %H:%M} UTC; gunicorn "
          f"{args.worker_class or 'gevent'} x {args.workers} worker(s) per server; gateway "
          f"SERVICE_NAME={args.gateway_services}; REDIS_URL={args.redis_url or '(none)'}; "
          f"{args.rounds} rounds x {args.duration:g} s; {os.cpu_count()} cores, "
          f"{context['idle_load']:.2f} busy before start. Medians over rounds; CPU: total over total.")
    print()
    print(render_table(summaries, args.kinds, args.concurrency))
    print()
    print(render_derived(rows))
    print()
    print("\n".join(verdicts(rows)))
    if profile and "failed" not in profile:
        print()
        print(render_profile(profile))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return write_results(results_path(args.output, "gateway", context["started_at"]), {
        "started_at": context["started_at"].isoformat(), "gaia_revision": context["revision"],
        "machine": {"cores": os.cpu_count(), "background_cores_busy": context["idle_load"],
                    "platform": platform.platform(), "python": platform.python_version()},
        "settings": settings,
        "summary": [{"target": s.target, "kind": s.kind, "concurrency": s.concurrency,
                     "median_rps": s.median("rps"), "median_p50_ms": s.median("p50_ms"),
                     "median_p99_ms": s.median("p99_ms"), "cpu_us_per_request": s.cpu_us(),
                     "cpu_us_per_request_by_process": {p: s.cpu_us(p) for p in CHARGED[s.target]},
                     "client_cpu_us_per_request": s.client_cpu_us(), "ok": s.ok, "errors": s.errors}
                    for s in summaries.values()],
        "derived": rows, "targets": {"hop_p50_ms": TARGET_HOP_P50_MS, "rps_ratio": TARGET_RPS_RATIO},
        "profile": profile, "rounds": [r.row() for r in rounds],
    })


def run(args: argparse.Namespace, workdir: Path, cleanup: ExitStack, context: dict) -> int:
    database = BenchDatabase(args.pg_url)
    database.create()
    cleanup.callback(database.drop)
    log(f"created database {database.name}")
    envs = server_envs(args, database.url, workdir / "instance")
    cli_env = {k: v for k, v in envs["monolith"].items() if k != "PORT"}
    key = migrate_and_key(cli_env, cwd=args.gaia_root)
    log("migrated and created the admin key")
    servers = start_servers(envs, args, workdir, cleanup, key)
    kinds = [KIND_TABLE[k] for k in args.kinds]
    warm_up(servers, kinds, key, max(args.concurrency), args.warmup)
    summaries, rounds = run_rounds(servers, kinds, key, args.concurrency, args.rounds, args.duration)
    for server in servers.values():
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")
    rows = derived(summaries, args.kinds, args.concurrency)
    profile = None
    if args.profile:
        log(f"profiling the gateway in process ({args.profile} calls per layer)")
        try:  # the rounds are kept whatever happens to the profile
            profile = run_profile(envs["gateway"], args.gaia_root, key, servers["chat"].base_url,
                                  args.profile, not args.profile_no_gevent, workdir / "profile.log")
        except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            log(f"the profile failed, the rounds are reported without it: {exc}")
            profile = {"failed": str(exc)}
    output = report(args, summaries, rounds, rows, context, profile)
    print()
    print("Per round:")
    print(render_rounds(rounds))
    log(f"results written to {output}")
    if sum(s.errors for s in summaries.values()):
        return 2
    return 1 if profile and "failed" in profile else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    context = {"started_at": datetime.now(timezone.utc),
               "revision": args.gaia_label or (git_revision() if args.gaia_root == ROOT
                                               else f"tree at {args.gaia_root}")}
    workdir = Path(tempfile.mkdtemp(prefix="gaia-bench-gateway-"))
    exit_code = 1
    with ExitStack() as cleanup:
        try:
            context["idle_load"] = background_cores()
            log(f"background load before start: {context['idle_load']:.2f} of {os.cpu_count()} cores busy")
            if context["idle_load"] > QUIET_CORES:
                log("WARNING: the machine is busy with other work; figures will be noisy "
                    "(see the 'other cores' column per round, and the quiet pairs)")
            exit_code = run(args, workdir, cleanup, context)
        except (KeyboardInterrupt, Interrupted) as exc:
            exit_code = interrupted(exc)
        except Exception as exc:  # noqa: BLE001 - reported, then everything is cleaned up
            log(f"failed: {exc}")
            for name in PROCESSES:
                path = workdir / f"{name}.log"
                if path.exists():
                    log(f"--- {name} log tail ---\n" + "\n".join(
                        path.read_text(errors="replace").splitlines()[-15:]))
            exit_code = 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    remove_workdir(workdir, args.keep_logs)
    return exit_code


if __name__ == "__main__":
    sys.exit(profile_child() if sys.argv[1:] == ["--profile-child"] else main())
