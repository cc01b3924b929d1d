"""A small HTTP/1.1 load generator on raw asyncio streams (standard library only).

N connections each send one request at a time, for a fixed duration or a fixed number of
requests, and the run is bounded in time whatever the server does. Connections are kept
alive when the server allows it; when it answers ``Connection: close`` (gunicorn's sync
worker always does) the connection is made anew for the next request, and the connect
time is part of that request's latency, as it would be for a real client.

Requests may carry a body (``method="POST", body=...``), the same for every connection or one
per connection (``bodies=[...]``, connection i sends ``bodies[i % len(bodies)]``). For
streamed answers, ``first_marker`` (a regular expression on bytes) records when it first
appears in each answer's body: the time to first content (``ttfb_ms``, ``ttfb_p50_ms``,
``ttfb_p99_ms``), next to the time to the whole answer (the usual latencies), and the time to
the response head (``head_ms``). ``count_markers`` counts other patterns in the bodies (e.g.
SSE keep-alive comments). Without these options nothing of the body is inspected.

Any answer other than the expected status (200 by default), any connection error and any
timeout counts as an error. Requests per second count successful answers only.

Only loopback addresses are accepted as targets.

As a library::

    from bench.loadgen import run_load
    result = run_load("http://127.0.0.1:8000/api/v0.2/models", concurrency=8, duration=5,
                      headers={"X-API-Key": key})
    print(result.rps, result.p50_ms, result.p99_ms, result.errors)

As a command::

    python bench/loadgen.py http://127.0.0.1:8000/health/live -c 8 -d 5 [-H 'Name: value'] [--json]
    python bench/loadgen.py http://127.0.0.1:8099/v1/chat/completions -c 8 -d 5 \
        -H 'Content-Type: application/json' --data @body.json --first-marker '"content":"[^"]'
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import re
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

__all__ = ["LoadResult", "percentile", "run_load", "run_load_async"]

_MAX_HEADER_BYTES = 64 * 1024


@dataclass
class LoadResult:
    url: str
    concurrency: int
    elapsed_s: float  # first request sent .. last answer read
    requests: int  # attempts that finished (an answer or an error)
    ok: int  # answers with the expected status
    errors: int  # everything else
    connects: int  # TCP connections opened
    rps: float  # ok / elapsed_s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    client_cpu_s: float  # CPU used by this process during the run (the load generator itself)
    status_counts: dict[str, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    # Only with first_marker / count_markers (see run_load):
    ttfb_ms: list[float] = field(default_factory=list, repr=False)  # to first_marker, sorted
    ttfb_p50_ms: float = math.nan
    ttfb_p99_ms: float = math.nan
    head_ms: list[float] = field(default_factory=list, repr=False)  # to the response head
    heads_ok: int = 0  # response heads received with the expected status (finished or not)
    marker_counts: dict[str, int] = field(default_factory=dict)  # occurrences, all bodies
    marker_responses: dict[str, int] = field(default_factory=dict)  # answers with >= 1

    def summary(self) -> str:
        line = (
            f"{self.url} c={self.concurrency}: {self.ok} ok in {self.elapsed_s:.2f} s = "
            f"{self.rps:.1f} req/s; p50 {self.p50_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, max {self.max_ms:.2f} ms; errors {self.errors}"
        )
        if self.ttfb_ms:
            line += (f"; first content p50 {self.ttfb_p50_ms:.2f} ms, p99 {self.ttfb_p99_ms:.2f} ms"
                     f" ({len(self.ttfb_ms)} answers)")
        if self.marker_counts:
            line += f"; markers {dict(self.marker_counts)}"
        if self.error_kinds:
            line += f" {dict(self.error_kinds)}"
        return line

    def to_dict(self, with_latencies: bool = False) -> dict:
        data = asdict(self)
        if not with_latencies:
            data.pop("latencies_ms")
            data.pop("ttfb_ms")
            data.pop("head_ms")
        return data


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _check_loopback(host: str, port: int) -> None:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = info[4][0]
        if not ipaddress.ip_address(address.split("%")[0]).is_loopback:
            raise ValueError(f"refusing to send load to {host} ({address}): loopback addresses only")


if hasattr(asyncio, "timeout"):
    _timeout = asyncio.timeout
else:  # Python < 3.11: same bound, one task per call
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def _timeout(delay):
        task = asyncio.current_task()
        handle = asyncio.get_running_loop().call_later(delay, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            raise asyncio.TimeoutError from None
        finally:
            handle.cancel()


class _BadResponse(Exception):
    pass


class _Watch:
    """What one answer's body showed, as it arrived (only with first_marker/count_markers)."""

    __slots__ = ("first", "counts", "tail", "head_at", "status", "first_at", "found")
    _TAIL = 256  # bytes kept from the previous piece, so a marker split in two is still seen

    def __init__(self, first: re.Pattern | None, counts: list[tuple[str, re.Pattern]]) -> None:
        self.first = first
        self.counts = counts
        self.tail = b""
        self.head_at: float | None = None
        self.status: int | None = None
        self.first_at: float | None = None
        self.found: Counter[str] = Counter()

    def head(self, status: int) -> None:
        self.head_at = time.perf_counter()
        self.status = status

    def feed(self, data: bytes) -> None:
        buffer = self.tail + data
        seen = len(self.tail)
        if self.first is not None and self.first_at is None:
            match = self.first.search(buffer)
            if match is not None and match.end() > seen:
                self.first_at = time.perf_counter()
        for name, pattern in self.counts:
            for match in pattern.finditer(buffer):
                if match.end() > seen:
                    self.found[name] += 1
        self.tail = buffer[-self._TAIL:]


async def _read_response(reader: asyncio.StreamReader, method: str,
                         watch: _Watch | None = None) -> tuple[int, bool, int]:
    """Read one response; returns (status, server_wants_close, body_bytes).

    With `watch`, the head's arrival and every piece of the body are reported to it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise ConnectionResetError("connection closed before the response") from None
        raise _BadResponse("truncated response head") from None
    except asyncio.LimitOverrunError:
        raise _BadResponse("response head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise _BadResponse(f"bad status line {lines[0][:80]!r}")
    version, status = parts[0], int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    connection = headers.get("connection", "").lower()
    close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    if watch is not None:
        watch.head(status)

    body = 0
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        pass
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailers, then the empty line.
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            data = await reader.readexactly(size + 2)
            if watch is not None:
                watch.feed(data[:-2])
            body += size
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length:
            data = await reader.readexactly(length)
            if watch is not None:
                watch.feed(data)
        body = length
    else:
        data = await reader.read()  # delimited by the end of the connection
        if watch is not None:
            watch.feed(data)
        body = len(data)
        close = True
    return status, close, body


async def run_load_async(
    url: str,
    *,
    concurrency: int = 8,
    duration: float | None = 5.0,
    requests: int | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes = b"",
    expect_status: int = 200,
    timeout: float = 10.0,
    time_limit: float | None = None,
    bodies: list[bytes] | None = None,
    first_marker: bytes | None = None,
    count_markers: dict[str, bytes] | None = None,
) -> LoadResult:
    """Run the load in the current event loop. See `run_load` for the parameters."""
    if duration is None and requests is None:
        raise ValueError("give a duration, a number of requests, or both")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError("only http:// URLs are supported")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    _check_loopback(host, port)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if time_limit is None:
        time_limit = (duration if duration is not None else 300.0) + timeout + 5.0

    header_lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    sent = {"host"}
    for name, value in (headers or {}).items():
        header_lines.append(f"{name}: {value}")
        sent.add(name.lower())
    if "user-agent" not in sent:
        header_lines.append("User-Agent: gaia-bench-loadgen")

    def request_for(payload: bytes) -> bytes:
        lines = list(header_lines)
        if payload or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload

    if bodies is not None and not bodies:
        raise ValueError("bodies, when given, must not be empty")
    requests_bytes = [request_for(payload) for payload in (bodies if bodies is not None else [body])]
    first_pattern = re.compile(first_marker) if first_marker is not None else None
    count_patterns = [(name, re.compile(pattern)) for name, pattern in (count_markers or {}).items()]
    watching = first_pattern is not None or bool(count_patterns)
    ttfbs: list[float] = []
    heads: list[float] = []
    heads_ok = [0]
    marker_counts: Counter[str] = Counter()
    marker_responses: Counter[str] = Counter()

    def note(watch: _Watch | None, sent_at: float) -> None:
        if watch is None:
            return
        if watch.head_at is not None:
            heads.append((watch.head_at - sent_at) * 1000.0)
            if watch.status == expect_status:
                heads_ok[0] += 1
        if watch.first_at is not None:
            ttfbs.append((watch.first_at - sent_at) * 1000.0)
        for name, count in watch.found.items():
            marker_counts[name] += count
            marker_responses[name] += 1

    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    error_kinds: Counter[str] = Counter()
    counters = {"started": 0, "finished": 0, "ok": 0, "connects": 0}
    last_done = [0.0]

    start = time.perf_counter()
    deadline = start + duration if duration is not None else math.inf
    cpu_start = time.process_time()

    async def one_connection(request_bytes: bytes) -> None:
        reader = writer = None
        try:
            while time.perf_counter() < deadline:
                if requests is not None:
                    if counters["started"] >= requests:
                        break
                counters["started"] += 1
                sent_at = time.perf_counter()
                watch = _Watch(first_pattern, count_patterns) if watching else None
                try:
                    # asyncio.timeout (3.11+) bounds the await without the extra task that
                    # wait_for makes for every call, which would cost the load generator CPU.
                    async with _timeout(timeout):
                        if writer is None:
                            reader, writer = await asyncio.open_connection(
                                host, port, limit=_MAX_HEADER_BYTES
                            )
                            counters["connects"] += 1
                        writer.write(request_bytes)
                        status, close, _ = await _read_response(reader, method, watch)
                except (asyncio.TimeoutError, OSError, _BadResponse, asyncio.IncompleteReadError,
                        ValueError) as exc:
                    kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
                    error_kinds[kind] += 1
                    note(watch, sent_at)
                    counters["finished"] += 1
                    last_done[0] = time.perf_counter()
                    if writer is not None:
                        writer.close()
                    reader = writer = None
                    continue
                done = time.perf_counter()
                note(watch, sent_at)
                last_done[0] = done
                counters["finished"] += 1
                latencies.append((done - sent_at) * 1000.0)
                statuses[str(status)] += 1
                if status == expect_status:
                    counters["ok"] += 1
                else:
                    error_kinds[f"status {status}"] += 1
                if close:
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()

    tasks = [asyncio.ensure_future(one_connection(requests_bytes[index % len(requests_bytes)]))
             for index in range(concurrency)]
    try:
        _, pending = await asyncio.wait(tasks, timeout=time_limit)
        if pending:
            error_kinds["run time limit"] += len(pending)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()
    cpu = time.process_time() - cpu_start
    elapsed = (last_done[0] or time.perf_counter()) - start
    latencies.sort()
    ttfbs.sort()
    heads.sort()
    return LoadResult(
        url=url,
        concurrency=concurrency,
        elapsed_s=elapsed,
        requests=counters["finished"],
        ok=counters["ok"],
        errors=sum(error_kinds.values()),
        connects=counters["connects"],
        rps=counters["ok"] / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(latencies, 50),
        p90_ms=percentile(latencies, 90),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else math.nan,
        mean_ms=sum(latencies) / len(latencies) if latencies else math.nan,
        client_cpu_s=cpu,
        status_counts=dict(statuses),
        error_kinds=dict(error_kinds),
        latencies_ms=latencies,
        ttfb_ms=ttfbs,
        ttfb_p50_ms=percentile(ttfbs, 50),
        ttfb_p99_ms=percentile(ttfbs, 99),
        head_ms=heads,
        heads_ok=heads_ok[0],
        marker_counts=dict(marker_counts),
        marker_responses=dict(marker_responses),
    )


def run_load(
    url: str,
    *,
    concurrency: int = 8,
    duration: float | None = 5.0,
    requests: int | None = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes = b"",
    expect_status: int = 200,
    timeout: float = 10.0,
    time_limit: float | None = None,
    bodies: list[bytes] | None = None,
    first_marker: bytes | None = None,
    count_markers: dict[str, bytes] | None = None,
) -> LoadResult:
    """Send load to `url` (http://, loopback only) and return a `LoadResult`.

    concurrency: connections, each with one request in flight.
    duration: seconds during which new requests are started; requests: total to send.
        With both, whichever ends first. At least one is required.
    timeout: seconds allowed to connect and read one answer (then it is an error).
    time_limit: hard bound on the whole run (default duration + timeout + 5 s).
    body: the request body (sent with a Content-Length); bodies: one per connection instead
        (connection i sends bodies[i % len(bodies)]).
    first_marker: a regular expression (bytes); the time from sending a request until it
        first matches in the answer's body is kept (`ttfb_ms`, `ttfb_p50_ms`, `ttfb_p99_ms`),
        and so is the time to the response head (`head_ms`, `heads_ok`).
    count_markers: {name: regular expression (bytes)}: matches counted over all bodies
        (`marker_counts`) and answers with at least one (`marker_responses`).
    """
    return asyncio.run(
        run_load_async(
            url,
            concurrency=concurrency,
            duration=duration,
            requests=requests,
            headers=headers,
            method=method,
            body=body,
            expect_status=expect_status,
            timeout=timeout,
            time_limit=time_limit,
            bodies=bodies,
            first_marker=first_marker,
            count_markers=count_markers,
        )
    )


def _parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header {text!r} is not 'Name: value'")
    return name.strip(), value.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="http://127.0.0.1:PORT/path (loopback only)")
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("-d", "--duration", type=float, default=None, help="seconds (default 5)")
    parser.add_argument("-n", "--requests", type=int, default=None, help="total requests")
    parser.add_argument("-H", "--header", action="append", type=_parse_header, default=[])
    parser.add_argument("-X", "--method", default="GET")
    parser.add_argument("--data", default=None,
                        help="request body (use @FILE to read it from a file); POST by default")
    parser.add_argument("--first-marker", default=None,
                        help="regular expression: report the time until it first appears in "
                        "each body (e.g. for SSE: '\"content\":\"[^\"]')")
    parser.add_argument("--expect-status", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None or args.requests is not None else 5.0
    body = b""
    if args.data is not None:
        if args.data.startswith("@"):
            with open(args.data[1:], "rb") as handle:
                body = handle.read()
        else:
            body = args.data.encode()
        if args.method.upper() == "GET":
            args.method = "POST"
    result = run_load(
        args.url,
        concurrency=args.concurrency,
        duration=duration,
        requests=args.requests,
        headers=dict(args.header),
        method=args.method.upper(),
        body=body,
        expect_status=args.expect_status,
        timeout=args.timeout,
        first_marker=args.first_marker.encode() if args.first_marker else None,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.summary())
    return 0 if result.errors == 0 and result.ok > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
