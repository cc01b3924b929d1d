"""Where Gaia's `GET /api/v0.2/models` spends its time, without gunicorn or the network.

Both apps are called as WSGI callables in this one process (as a gunicorn worker calls them),
so the difference is exactly what Gaia's request path adds to a bare Flask view:

  1. per-call wall and CPU time of the bare endpoint and of Gaia's, alternating, best of 5;
  2. a breakdown by layer: extra routes are added to a Gaia app built for this (never to the
     code base) that add one layer at a time: Gaia's app-level hooks, `require_auth`
     (cache hit + rate limiter), the response schema, the query-argument schema;
  3. the Gaia request under cProfile, top functions by cumulative and by own time.

    .venv/bin/python bench/profile_models_auth.py [--requests 5000] [--redis-url redis://127.0.0.1:6379/0]

It makes its own PostgreSQL database gaia_bench_<random> (dropped at the end) like
bench_models_auth.py, with the same Gaia settings and options.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_models_auth import MODELS_PATH, add_gaia_arguments  # noqa: E402
from bench.common import (  # noqa: E402
    BenchDatabase,
    clean_environment,
    gaia_environment,
    git_revision,
    migrate_and_key,
    release_app,
    time_calls,
    wsgi_caller,
)


def make_caller(app, path: str, headers: dict[str, str]):
    """A function that runs one GET of `path` through `app` like a WSGI server, checking for 200."""
    return wsgi_caller(app, "GET", path, headers)


def best_of(rows: list[tuple[str, object]], n: int, repeats: int = 5) -> dict[str, tuple[float, float]]:
    """Alternate the rows `repeats` times; keep each row's lowest CPU time (least disturbed)."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeats):
        for label, call in rows:
            wall, cpu = time_calls(call, n)
            if label not in best or cpu < best[label][1]:
                best[label] = (wall, cpu)
    return best


def add_probe_routes(app) -> dict[str, str]:
    """Routes that add Gaia's layers one by one around the same view body."""
    from flask import jsonify
    from flask_smorest import Blueprint

    from blueprints.chat import catalog
    from blueprints.chat.schemas import ModelListSchema, ModelQuerySchema
    from gaia_app.identity import require_auth

    blp = Blueprint("bench_probe", __name__, url_prefix="/bench-probe")

    @blp.route("/plain")
    def plain():
        return jsonify({"models": catalog.models(), "total": 2})

    @blp.route("/auth")
    @require_auth
    def auth():
        return jsonify({"models": catalog.models(), "total": 2})

    @blp.route("/auth-response")
    @require_auth
    @blp.response(200, ModelListSchema)
    def auth_response():
        return {"models": catalog.models(), "total": 2}

    @blp.route("/auth-response-args")
    @require_auth
    @blp.arguments(ModelQuerySchema(), location="query", as_kwargs=True)
    @blp.response(200, ModelListSchema)
    def auth_response_args(provider=None, capability=None):
        return {"models": catalog.models(provider=provider, capability=capability), "total": 2}

    app.extensions["gaia"].api.register_blueprint(blp)
    return {
        "plain": "/bench-probe/plain",
        "auth": "/bench-probe/auth",
        "auth-response": "/bench-probe/auth-response",
        "auth-response-args": "/bench-probe/auth-response-args",
    }


def micro_timings(app, key: str, n: int) -> list[tuple[str, float]]:
    """CPU µs of single pieces of the request path, outside Flask's dispatch."""
    from blueprints.chat import catalog
    from blueprints.chat.schemas import ModelListSchema, ModelQuerySchema

    auth = app.extensions["gaia"].authenticator
    headers = {"X-API-Key": key}
    with app.app_context():
        payload = {"models": catalog.models(), "total": 2}
    schema = ModelListSchema()
    with app.app_context():
        principal = auth.authenticate(headers)
    pieces = [
        ("Authenticator.authenticate (cache hit)", lambda: auth.authenticate(headers)),
        ("RateLimiter.hit (per request)",
         lambda: app.extensions["gaia"].rate_limiter.hit("principal", principal.rate_limit_identity,
                                       principal.rate_limit)),
        ("ModelQuerySchema() (what webargs made per request when given the class)",
         ModelQuerySchema),
        ("ModelListSchema.dump(2 models)", lambda: schema.dump(payload)),
        ("flask json dumps of the body", lambda: app.json.dumps(payload)),
    ]
    out = []
    with app.app_context():  # a cache miss of the key cache queries the database
        for label, fn in pieces:
            fn()
            best = min(time_calls(fn, n)[1] for _ in range(3))
            out.append((label, best))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="calls per measurement (5000)")
    parser.add_argument("--top", type=int, default=25, help="profile lines to print (25)")
    add_gaia_arguments(parser)
    args = parser.parse_args(argv)

    database = BenchDatabase(args.pg_url)
    workdir = Path(tempfile.mkdtemp(prefix="gaia-profile-"))
    gaia_app = probe_app = None
    try:
        database.create()
        env = gaia_environment(clean_environment(), database.url, workdir, args)
        env["LOG_LEVEL"] = "WARNING"
        key = migrate_and_key(env)
        os.environ.clear()
        os.environ.update(env)

        from bench.bare_app import app as bare_app
        from gaia_app import create_app

        gaia_app = create_app()
        probe_app = create_app()
        probe_paths = add_probe_routes(probe_app)
        key_header = {"X-API-Key": key}
        n = args.requests

        bare = make_caller(bare_app, MODELS_PATH, {})
        gaia = make_caller(gaia_app, MODELS_PATH, key_header)
        for call in (bare, gaia):
            for _ in range(500):
                call()
        ttl = (args.auth_cache_ttl if args.auth_cache_ttl is not None else
               "app default (60 with Redis)" if args.redis_url else "app default (1.0)")
        print(f"Gaia {git_revision()}, in-process WSGI calls of GET {MODELS_PATH}; "
              f"AUTH_CACHE_TTL={ttl}, REDIS_URL={args.redis_url or '(none)'}; "
              f"{n} calls per measurement, alternating, best of 5 by CPU time")
        print()
        rows = [
            ("bare Flask app, same body", bare),
            ("Gaia: /health/live (app hooks only)", make_caller(probe_app, "/health/live", {})),
            ("Gaia: jsonify(catalog.models())", make_caller(probe_app, probe_paths["plain"], {})),
            ("  + @require_auth", make_caller(probe_app, probe_paths["auth"], key_header)),
            ("  + @blp.response(ModelListSchema)",
             make_caller(probe_app, probe_paths["auth-response"], key_header)),
            ("  + @blp.arguments(ModelQuerySchema())",
             make_caller(probe_app, probe_paths["auth-response-args"], key_header)),
            ("Gaia: the real GET /api/v0.2/models", gaia),
        ]
        best = best_of(rows, n)
        base_cpu = best[rows[0][0]][1]
        previous = None
        print("| request path | wall µs/call | CPU µs/call | step | vs bare |")
        print("|---|---:|---:|---:|---:|")
        for label, _ in rows:
            wall, cpu = best[label]
            step = "" if previous is None or not label.startswith("  +") else f"{cpu - previous:+.1f}"
            print(f"| {label} | {wall:.1f} | {cpu:.1f} | {step} | {cpu / base_cpu:.2f}x |")
            previous = cpu
        print()
        print("| piece, called alone | CPU µs/call |")
        print("|---|---:|")
        for label, cpu in micro_timings(gaia_app, key, n):
            print(f"| {label} | {cpu:.1f} |")
        print()

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            gaia()
        profiler.disable()
        for sort in ("cumulative", "tottime"):
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).sort_stats(sort).print_stats(args.top)
            text = stream.getvalue().replace(str(ROOT) + "/", "")
            print(f"--- cProfile of {n} Gaia calls (profiler overhead inflates small calls), "
                  f"sorted by {sort} ---")
            print(text[text.find("   ncalls"):].rstrip())
            print()
        return 0
    finally:
        for app in (gaia_app, probe_app):
            if app is not None:
                release_app(app)
        database.drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
