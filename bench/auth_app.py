"""Gaia with two bench-only routes around the same view: one open, one behind `require_auth`.

For bench/bench_auth.py, under Gaia's own gunicorn settings, from the repository root:

    gunicorn -c gunicorn.conf.py 'bench.auth_app:create_bench_app()'

`create_bench_app()` builds the real app with `gaia_app.create_app()` (every setting, hook and
extension as `wsgi:app` has them) and adds, before any request:

  - OPEN_PATH: a plain Flask view that returns `catalog.models_listing(MODEL_LIST)`, the body
    `GET /api/v0.2/models` returns, byte for byte, with no credentials checked;
  - AUTH_PATH: the very same view function wrapped in `require_auth` (as `GET /models` is).

So the difference between the two is `require_auth` and nothing else: credential parsing, the
cache lookup (or validation on a miss), the rate limiter and its `X-RateLimit-*` headers.
`GET /api/v0.2/models` itself is unchanged and also has flask-smorest's argument parsing and
response wrapper on top.

With BENCH_SQL_LOG=<file> set, every statement the app sends to the database and every
connection checkout from the pool (each costs a `pool_pre_ping` round trip) is appended to
that file as one line: `<unix time> <pid> checkout -` or `<unix time> <pid> sql <VERB> <table>`.
Queries are rare on the request path, so this costs nothing measurable; it tells which
queries the database counters (pg_stat_database) saw.

Nothing here is part of the app: the routes exist only in this bench module.
"""

from __future__ import annotations

import os
import sys
import time

OPEN_PATH = "/bench/open-models"
AUTH_PATH = "/bench/auth-models"


def open_models():
    """Exactly what `GET /api/v0.2/models` returns with no filter, without authentication."""
    from blueprints.chat import catalog
    from blueprints.chat.routes import MODEL_LIST

    return catalog.models_listing(MODEL_LIST)


def register_bench_routes(app):
    from gaia_app.identity import require_auth

    app.add_url_rule(OPEN_PATH, "bench_open_models", open_models)
    app.add_url_rule(AUTH_PATH, "bench_auth_models", require_auth(open_models))
    return app


def statement_kind(statement: str) -> str:
    """`SELECT api_keys`, `UPDATE api_keys`, ...: the verb and the first table named."""
    words = statement.replace('"', "").split()
    if not words:
        return "? ?"
    verb = words[0].upper()
    upper = [w.upper() for w in words]
    table = "?"
    if verb == "SELECT" and "FROM" in upper:
        table = words[upper.index("FROM") + 1] if upper.index("FROM") + 1 < len(words) else "?"
    elif verb == "UPDATE" and len(words) > 1:
        table = words[1]
    elif verb in ("INSERT", "DELETE") and len(words) > 2:
        table = words[2]
    return f"{verb} {table.split('(')[0]}"


def log_sql(app, path: str) -> None:
    """Append a line per checkout and per statement to `path` (see the module docstring)."""
    from sqlalchemy import event

    from gaia_app.extensions import db

    def write(kind: str, text: str) -> None:
        line = f"{time.time():.6f} {os.getpid()} {kind} {text}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    with app.app_context():
        engine = db.engine

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, proxy):
        write("checkout", "-")

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, parameters, context, executemany):
        write("sql", statement_kind(statement))


def create_bench_app(config=None):
    """`gaia_app.create_app(config)` plus the two bench routes (gunicorn factory target)."""
    from gaia_app import create_app
    from gaia_app.config import ConfigError

    try:
        app = create_app(config)
    except ConfigError as error:  # as wsgi.py does: stop gunicorn instead of respawning
        print(f"gaia: configuration error: {error}", file=sys.stderr)
        raise SystemExit(4) from None
    if os.environ.get("BENCH_SQL_LOG"):
        log_sql(app, os.environ["BENCH_SQL_LOG"])
    return register_bench_routes(app)
