"""Authenticated `GET /api/v0.2/models` on Gaia vs a bare Flask endpoint, same gunicorn settings.

Run from the repository root with the project's virtualenv (see bench/README.md):

    .venv/bin/python bench/bench_models_auth.py              # 5 rounds x 5 s, c=8 then c=1
    .venv/bin/python bench/bench_models_auth.py --auth-cache-ttl 60
    .venv/bin/python bench/bench_models_auth.py --redis-url redis://127.0.0.1:6379/0
    .venv/bin/python bench/bench_models_auth.py --also-root old=/tmp/gaia-old   # two checkouts

With --also-root NAME=PATH (repeatable), one more Gaia runs in the same alternating rounds: gunicorn
started with cwd=PATH (so `wsgi:app` is that checkout's code), with the same environment,
gunicorn settings and Redis as `gaia`, but its own database gaia_bench_<random> (migrated and
given an admin key by that checkout's own CLI), so that the database counters are per Gaia.
The order of the targets then changes from round to round (--rotate), and the table
gains gaia/NAME ratios of req/s, CPU per request and p50, with their per-round min–max.

What it does, in one run:
  1. creates a fresh PostgreSQL database gaia_bench_<random> (dropped at the end, always),
     runs the migrations and creates an admin API key with Gaia's own CLI;
  2. starts Gaia (`wsgi:app`) and the bare app (`bench.bare_app:app`) under gunicorn with
     gunicorn.conf.py and identical settings (HOST, PORT, WEB_CONCURRENCY, sync workers),
     each on a free loopback port, from a clean environment, and waits until both answer 200;
  3. warms both up, then measures in alternating rounds (bare, gaia, bare, gaia, ...) for each
     concurrency, with bench/loadgen.py in this process;
  4. reads pg_stat_database for the bench database before and after the measured rounds and
     reports database transactions per 1000 Gaia requests;
  5. prints a table (median req/s over rounds, p50/p99 latency, gaia/bare ratio, the CPU time
     each server's processes used per request) and writes everything as JSON under
     bench/results/ (git-ignored).

Gaia runs with ENVIRONMENT=local and RATE_LIMIT_DEFAULT raised out of the way (the limiter
still runs); everything else is the app's default unless a flag says otherwise.
Everything it starts is stopped on exit, on an exception and on Ctrl-C / SIGTERM.
Only 127.0.0.1 is ever contacted. PostgreSQL is reached through --pg-url / BENCH_PG_URL
(default postgres://postgres@127.0.0.1:5432/postgres: the maintenance database, used to
create, watch and drop the bench database).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

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
    gaia_environment,
    git_revision,
    install_signal_handlers,
    interrupted,
    log,
    log_server_tails,
    migrate_and_key,
    remove_workdir,
    results_path,
    write_results,
)
from bench.loadgen import LoadResult, run_load  # noqa: E402

MODELS_PATH = "/api/v0.2/models"
TARGET_RATIO = 0.70


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

    @property
    def other_cores(self) -> float:
        """Cores busy with anything but this server and the load generator (noise, PostgreSQL,
        kernel work not charged to a process)."""
        elapsed = self.result.elapsed_s or float("nan")
        cores = os.cpu_count() or 1
        return max(0.0, self.machine_busy * cores
                   - (self.server_cpu_s + self.result.client_cpu_s) / elapsed)

    def row(self) -> dict:
        data = self.result.to_dict()
        data.update(target=self.target, round=self.index, server_cpu_s=self.server_cpu_s,
                    machine_busy=self.machine_busy, other_cores=self.other_cores)
        return data


@dataclass
class Summary(RoundTotals):
    target: str
    concurrency: int
    rounds: list[Round] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r.result, attribute) for r in self.rounds)

    @property
    def server_cpu_us_per_request(self) -> float:
        ok = self.ok
        return sum(r.server_cpu_s for r in self.rounds) / ok * 1e6 if ok else float("nan")

    @property
    def client_cpu_us_per_request(self) -> float:
        ok = self.ok
        return sum(r.result.client_cpu_s for r in self.rounds) / ok * 1e6 if ok else float("nan")


def measure(server: Server, url: str, headers: dict, concurrency: int, duration: float,
            index: int) -> Round:
    busy0, total0 = _machine_jiffies()
    cpu0 = server.cpu_seconds()
    result = run_load(url, concurrency=concurrency, duration=duration, headers=headers)
    cpu1 = server.cpu_seconds()
    busy1, total1 = _machine_jiffies()
    busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
    return Round(server.name, concurrency, index, result, cpu1 - cpu0, busy)


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def _round_cpu_us(r: Round) -> float:
    return r.server_cpu_s / r.result.ok * 1e6 if r.result.ok else float("nan")


def compare_summaries(this: Summary, other: Summary) -> dict:
    """this/other for req/s, server CPU per request and p50: the ratio of the medians (of the
    totals for CPU) and the min–max of the same ratio paired round by round."""
    def ratio(a: float, b: float) -> float:
        return a / b if b and b == b and a == a else float("nan")

    pairs = {r.index: r for r in other.rounds}
    out = {}
    for key, whole, per_round in (
        ("rps", lambda s: s.median("rps"), lambda r: r.result.rps),
        ("cpu", lambda s: s.server_cpu_us_per_request, _round_cpu_us),
        ("p50", lambda s: s.median("p50_ms"), lambda r: r.result.p50_ms),
    ):
        paired = [ratio(per_round(r), per_round(pairs[r.index])) for r in this.rounds
                  if r.index in pairs]
        paired = [v for v in paired if v == v]
        out[key] = ratio(whole(this), whole(other))
        out[key + "_paired_min"] = min(paired) if paired else float("nan")
        out[key + "_paired_max"] = max(paired) if paired else float("nan")
    return out


def _ratio_cell(values: dict, key: str) -> str:
    return (f"{_fmt(values[key], 2)}× ({_fmt(values[key + '_paired_min'], 2)}–"
            f"{_fmt(values[key + '_paired_max'], 2)})")


def render_table(summaries: dict[tuple[str, int], Summary], concurrencies: list[int],
                 targets: list[str], compare: list[str] = ()) -> str:
    """`compare`: names of other Gaia checkouts (--also-root); the gaia row then gets
    gaia/NAME ratios of req/s, CPU per request and p50 (per-round min–max in brackets)."""
    extra_head = "".join(f"| req/s gaia/{n} | CPU µs/req gaia/{n} | p50 gaia/{n} " for n in compare)
    lines = [
        "| conc. | target | req/s (median) | vs bare | paired ratios min–max | p50 ms | p99 ms "
        "| server CPU µs/req | bare CPU / this CPU | errors " + extra_head + "|",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (3 * len(compare)),
    ]
    for c in concurrencies:
        bare = summaries[("bare", c)]
        b_rps, b_cpu = bare.median("rps"), bare.server_cpu_us_per_request
        for name in targets:
            this = summaries[(name, c)]
            rps = this.median("rps")
            if name == "bare":
                ratio_text = paired_text = cpu_text = "—"
            else:
                paired = [t.result.rps / b.result.rps if b.result.rps else float("nan")
                          for b, t in zip(bare.rounds, this.rounds)]
                ratio_text = f"**{rps / b_rps * 100:.0f}%**" if b_rps else "n/a"
                paired_text = f"{min(paired) * 100:.0f}–{max(paired) * 100:.0f}%"
                cpu_text = f"{b_cpu / this.server_cpu_us_per_request * 100:.0f}%"
            cells = ""
            for other in compare:
                if name == "gaia":
                    values = compare_summaries(this, summaries[(other, c)])
                    cells += "".join(f"| {_ratio_cell(values, k)} " for k in ("rps", "cpu", "p50"))
                else:
                    cells += "| — " * 3
            lines.append(
                f"| {c} | {name} | {rps:.0f} | {ratio_text} | {paired_text} "
                f"| {this.median('p50_ms'):.2f} | {this.median('p99_ms'):.2f} "
                f"| {this.server_cpu_us_per_request:.0f} | {cpu_text} | {this.errors} {cells}|"
            )
    return "\n".join(lines)


def render_rounds(rounds: list[Round]) -> str:
    lines = ["| conc. | round | target | req/s | p50 ms | p99 ms | srv CPU µs/req "
             "| loadgen CPU µs/req | machine busy | other cores |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rounds:
        per_req = r.server_cpu_s / r.result.ok * 1e6 if r.result.ok else float("nan")
        lines.append(
            f"| {r.concurrency} | {r.index} | {r.target} | {r.result.rps:.0f} "
            f"| {r.result.p50_ms:.2f} | {r.result.p99_ms:.2f} | {_fmt(per_req, 0)} "
            f"| {r.result.client_cpu_s / r.result.ok * 1e6 if r.result.ok else float('nan'):.0f} "
            f"| {r.machine_busy * 100:.0f}% | {r.other_cores:.2f} |"
        )
    return "\n".join(lines)


def add_gaia_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that shape how Gaia runs; shared with profile_models_auth.py."""
    parser.add_argument("--auth-cache-ttl", type=float, default=None,
                        help="AUTH_CACHE_TTL for Gaia (default: the app's own: 1 s, or 60 s "
                        "with --redis-url)")
    parser.add_argument("--last-used-flush-interval", type=float, default=None,
                        help="LAST_USED_FLUSH_INTERVAL for Gaia (default: the app's own, 30 s)")
    parser.add_argument("--redis-url", type=_loopback_url, default=None,
                        help="REDIS_URL for Gaia, e.g. redis://127.0.0.1:6379/0: rate-limit "
                        "counters and the credential-change channel in Redis, as deployed "
                        "(default: none, in-process counters)")
    parser.add_argument("--rate-limit", default=BENCH_RATE_LIMIT,
                        help=f"RATE_LIMIT_DEFAULT for Gaia ({BENCH_RATE_LIMIT}: high enough "
                        "never to refuse; the limiter still runs)")
    parser.add_argument("--pg-url", type=_loopback_url,
                        default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                        help="maintenance database URL, on 127.0.0.1 (env BENCH_PG_URL; "
                        f"default {DEFAULT_PG_URL})")


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
    add_gaia_arguments(parser)
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results file (default bench/results/models_auth-<time>.json)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the gunicorn logs dir")
    parser.add_argument("--gaia-app", default="wsgi:app",
                        help="the WSGI target gunicorn runs for Gaia (wsgi:app); any "
                        "module:app or module:factory(args) of your own, to try a change")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=TARGET",
                        help="run one more Gaia WSGI target in the same alternation, e.g. "
                        "copy=wsgi:app (an A/A check of the noise) or a variant of your own; "
                        "repeatable")
    parser.add_argument("--also-root", action="append", default=[], metavar="NAME=PATH",
                        help="run one more Gaia, `wsgi:app` of another checkout at PATH (gunicorn "
                        "started with cwd=PATH), in the same alternation, e.g. old=/tmp/gaia-old; "
                        "the same environment and settings as gaia, its own database (migrated "
                        "by that checkout's CLI); implies --rotate; repeatable")
    parser.add_argument("--rotate", action="store_true",
                        help="rotate the order of the targets from round to round, and reverse "
                        "it every other round (default: bare, gaia, ... in every round; on "
                        "with --also-root)")
    args = parser.parse_args(argv)

    concurrencies = [int(c) for c in str(args.concurrency).replace(" ", "").split(",") if c]
    extras = []
    for item in args.also:
        name, sep, target = item.partition("=")
        if not sep or not name or not target or name in ("bare", "gaia") or not name.isidentifier():
            parser.error(f"--also {item!r}: expected NAME=MODULE:APP with a new simple NAME")
        extras.append((name, target))
    roots: list[tuple[str, Path]] = []
    for item in args.also_root:
        name, sep, path = item.partition("=")
        taken = {"bare", "gaia"} | {n for n, _ in extras} | {n for n, _ in roots}
        if not sep or not name or not path or name in taken or not name.isidentifier():
            parser.error(f"--also-root {item!r}: expected NAME=PATH with a new simple NAME")
        root = Path(path).expanduser().resolve()
        if not (root / "wsgi.py").is_file() or not (root / "gunicorn.conf.py").is_file():
            parser.error(f"--also-root {item!r}: no wsgi.py and gunicorn.conf.py in {root}")
        roots.append((name, root))
    rotate = args.rotate or bool(roots)
    if args.rounds < 1 or args.duration <= 0 or not concurrencies or min(concurrencies) < 1:
        parser.error("rounds, duration and concurrency must be positive")

    # SIGINT too: a shell that starts the runner in the background makes it ignore Ctrl-C's
    # signal otherwise, and then nothing would stop the servers on `kill -INT`.
    install_signal_handlers()

    started_at = datetime.now(timezone.utc)
    revision = git_revision()
    root_revisions = {name: git_revision(root) for name, root in roots}
    database = BenchDatabase(args.pg_url)
    root_databases = {name: BenchDatabase(args.pg_url) for name, _ in roots}
    workdir = Path(tempfile.mkdtemp(prefix="gaia-bench-"))
    servers: list[Server] = []
    exit_code = 1
    with ExitStack() as cleanup:
        try:
            idle_load = background_cores()
            log(f"background load before start: {idle_load:.2f} of {os.cpu_count()} cores busy")
            if idle_load > 0.25:
                log("WARNING: the machine is busy with other work; figures will be noisy "
                    "(see the 'other cores' column per round)")
            # 1. Database, schema, key.
            database.create()
            cleanup.callback(database.drop)
            log(f"created database {database.name}")
            for name, db in root_databases.items():
                db.create()
                cleanup.callback(db.drop)
                log(f"created database {db.name} for {name}")

            base_env = clean_environment()
            base_env.update(HOST="127.0.0.1", WEB_CONCURRENCY=str(args.workers),
                            GUNICORN_WORKER_CLASS="sync", GUNICORN_THREADS="1")
            gaia_base_env = dict(base_env)
            if roots:
                # Bytecode of every Gaia (this checkout's and the others') goes to one
                # temporary cache, so the other checkouts' trees are not written to, and all
                # start alike; it changes nothing once the modules are imported.
                gaia_base_env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
            gaia_env = gaia_environment(gaia_base_env, database.url, workdir / "instance", args)

            api_key = migrate_and_key(gaia_env)
            log("migrated and created the admin key")
            root_envs, root_keys = {}, {}
            for name, root in roots:
                env = gaia_environment(gaia_base_env, root_databases[name].url,
                                       workdir / f"instance-{name}", args)
                root_keys[name] = migrate_and_key(env, cwd=root)
                root_envs[name] = env
                log(f"{name} ({root}): migrated and created the admin key with its own CLI")

            # 2. Servers, identical gunicorn settings.
            servers = []
            for name, app, env in ([("bare", "bench.bare_app:app", base_env),
                                    ("gaia", args.gaia_app, gaia_env)]
                                   + [(n, t, gaia_env) for n, t in extras]):
                port = free_port()
                servers.append(Server(name, app, dict(env, PORT=str(port)), port,
                                      workdir / f"{name}.log"))
            for name, root in roots:
                port = free_port()
                servers.append(Server(name, "wsgi:app", dict(root_envs[name], PORT=str(port)), port,
                                      workdir / f"{name}.log", cwd=root))
            for server in servers:
                cleanup.callback(server.stop)
                server.start()
            headers = {server.name: {} if server.name == "bare" else
                       {"X-API-Key": root_keys.get(server.name, api_key)} for server in servers}
            for server in servers:
                server.wait_ready(MODELS_PATH, headers[server.name], args.workers)
            log("all servers answer 200 on " + MODELS_PATH)

            # 3. Warm-up (every worker imports lazily, opens its DB connection, fills its cache).
            for server in servers:
                warm = run_load(server.base_url + MODELS_PATH, concurrency=max(concurrencies),
                                duration=args.warmup, headers=headers[server.name])
                if warm.errors:
                    raise RuntimeError(f"warm-up of {server.name} had errors: {warm.summary()}")
                log(f"warm-up {warm.summary()}")

            # 4. Alternating rounds, with DB counters around them.
            before = database.stats()
            roots_before = {n: db.stats(flush_wait=0.0) for n, db in root_databases.items()}
            rounds: list[Round] = []
            summaries: dict[tuple[str, int], Summary] = {}
            for c in concurrencies:
                for server in servers:
                    summaries[(server.name, c)] = Summary(server.name, c)
                for index in range(1, args.rounds + 1):
                    order = servers
                    if rotate:  # rotated each round, and reversed every other round
                        shift = (index - 1) % len(servers)
                        order = servers[shift:] + servers[:shift]
                        if index % 2 == 0:
                            order = order[::-1]
                    for server in order:
                        r = measure(server, server.base_url + MODELS_PATH, headers[server.name],
                                    c, args.duration, index)
                        rounds.append(r)
                        summaries[(server.name, c)].rounds.append(r)
                        log(f"round {index} {server.name} {r.result.summary()}")
            after = database.stats()
            roots_after = {n: db.stats(flush_wait=0.0) for n, db in root_databases.items()}

            for server in servers:
                if server.proc.poll() is not None:
                    raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")

            # 5. Report.
            gaia_requests = sum(s.ok + s.errors for (n, _), s in summaries.items()
                                if n != "bare" and n not in root_databases)
            delta = {k: after[k] - before[k] for k in before if k != "numbackends"}
            xacts = delta["xact_commit"] + delta["xact_rollback"]
            per_1000 = xacts / gaia_requests * 1000 if gaia_requests else float("nan")
            measured_s = sum(r.result.elapsed_s for r in rounds
                             if r.target != "bare" and r.target not in root_databases)

            ttl = (args.auth_cache_ttl if args.auth_cache_ttl is not None else
                   "app default (60 with Redis)" if args.redis_url else "app default (1.0)")
            flush = (args.last_used_flush_interval if args.last_used_flush_interval is not None
                     else "30 (app default)")
            table = render_table(summaries, concurrencies, [server.name for server in servers],
                                 [name for name, _ in roots])
            print()
            print(f"Gaia GET {MODELS_PATH} (X-API-Key) vs bare Flask, gunicorn sync x "
                  f"{args.workers} workers each; {args.rounds} alternating rounds x "
                  f"{args.duration:g} s per concurrency; medians over rounds.")
            variants = "".join(f", {n}={t}" for n, t in extras)
            print(f"Gaia {revision} (gaia={args.gaia_app}{variants}): AUTH_CACHE_TTL={ttl}, LAST_USED_FLUSH_INTERVAL={flush}, "
                  f"REDIS_URL={args.redis_url or '(none)'}, RATE_LIMIT_DEFAULT={args.rate_limit}; "
                  f"{os.cpu_count()} cores, {idle_load:.2f} busy with other work before start; "
                  f"{started_at:%Y-%m-%d %H:%M} UTC")
            for name, root in roots:
                print(f"{name}: wsgi:app of {root} ({root_revisions[name]}), the same environment "
                      f"and settings, its own database {root_databases[name].name}")
            if rotate:
                print("The order of the targets rotates from round to round (reversed every other "
                      "round). Ratios gaia/NAME: "
                      "of the medians (CPU: of the totals), per-round paired min–max in brackets.")
            print()
            print(table)
            print()
            for c in concurrencies:
                ratio = summaries[("gaia", c)].median("rps") / summaries[("bare", c)].median("rps")
                verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
                print(f"c={c}: gaia keeps {ratio * 100:.1f}% of bare req/s -> {verdict} the "
                      f"{TARGET_RATIO * 100:.0f}% target")
                for name, _ in roots:
                    r_ratio = summaries[(name, c)].median("rps") / summaries[("bare", c)].median("rps")
                    print(f"c={c}: {name} keeps {r_ratio * 100:.1f}% of bare req/s "
                          f"({'meets' if r_ratio >= TARGET_RATIO else 'MISSES'} the target)")
            print()
            who = "Gaia" if not extras else "Gaia (all variants together: they share it)"
            root_db = {}
            print(f"Database ({database.name}) during the measured rounds: {xacts} transactions "
                  f"({delta['xact_commit']} commit, {delta['xact_rollback']} rollback), "
                  f"tup_returned {delta['tup_returned']}, tup_fetched {delta['tup_fetched']}, "
                  f"tup_updated {delta['tup_updated']}, for {gaia_requests} {who} requests "
                  f"over {measured_s:.1f} s of that load -> {per_1000:.2f} transactions per 1000 "
                  f"requests ({xacts / measured_s if measured_s else 0:.2f} per second of load).")
            for name, db in root_databases.items():
                d = {k: roots_after[name][k] - roots_before[name][k] for k in roots_before[name]
                     if k != "numbackends"}
                n_x = d["xact_commit"] + d["xact_rollback"]
                n_req = sum(s.ok + s.errors for (n, _), s in summaries.items() if n == name)
                n_s = sum(r.result.elapsed_s for r in rounds if r.target == name)
                root_db[name] = {"database": db.name, "before": roots_before[name],
                                 "after": roots_after[name], "delta": d, "transactions": n_x,
                                 "requests": n_req,
                                 "transactions_per_1000_requests": n_x / n_req * 1000 if n_req else None}
                print(f"Database of {name} ({db.name}): {n_x} transactions ({d['xact_commit']} commit, "
                      f"{d['xact_rollback']} rollback), tup_returned {d['tup_returned']}, tup_fetched "
                      f"{d['tup_fetched']}, tup_updated {d['tup_updated']}, for {n_req} requests over "
                      f"{n_s:.1f} s -> {n_x / n_req * 1000 if n_req else float('nan'):.2f} per 1000 "
                      f"requests ({n_x / n_s if n_s else 0:.2f} per second of load).")
            load_cpu = {k: round(s.client_cpu_us_per_request) for k, s in
                        ((f"{n}@c{c}", s) for (n, c), s in summaries.items())}
            print(f"Load generator CPU µs/request (same process, shares the 2 cores): {load_cpu}")
            print()
            print("Per round:")
            print(render_rounds(rounds))

            output = write_results(results_path(args.output, "models_auth", started_at), {
                "started_at": started_at.isoformat(),
                "gaia_revision": revision,
                "gaia_app": args.gaia_app,
                "variants": dict(extras),
                "other_roots": {name: {"path": str(root), "revision": root_revisions[name],
                                       "database": root_db.get(name)} for name, root in roots},
                "rotated": rotate,
                "comparisons": [
                    {"concurrency": c, "this": "gaia", "other": name,
                     **compare_summaries(summaries[("gaia", c)], summaries[(name, c)])}
                    for name, _ in roots for c in concurrencies
                ],
                "machine": {"cores": os.cpu_count(), "background_cores_busy": idle_load,
                            "platform": platform.platform(),
                            "python": platform.python_version()},
                "settings": {"duration": args.duration, "rounds": args.rounds,
                             "concurrency": concurrencies, "workers": args.workers,
                             "auth_cache_ttl": args.auth_cache_ttl,
                             "redis_url": args.redis_url, "rate_limit": args.rate_limit,
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
            })
            log(f"results written to {output}")
            errors = sum(s.errors for s in summaries.values())
            exit_code = 0 if errors == 0 else 2
        except (KeyboardInterrupt, Interrupted) as exc:
            exit_code = interrupted(exc)
        except Exception as exc:
            log(f"failed: {exc}")
            log_server_tails(servers)
            exit_code = 1
        finally:
            # Ignore a second Ctrl-C while the servers and the database are being cleaned up.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    remove_workdir(workdir, args.keep_logs)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
