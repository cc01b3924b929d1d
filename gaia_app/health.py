"""`/health` and `/health/live`: what an operator and Fly's checks can trust.

`/health` really talks to the database (latency, migration state), the broker and, on a
gateway in split mode, the other services (their health and build versions).
`/health/live` touches nothing.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from flask import Flask, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gaia_app.blueprint import Blueprint
from gaia_app.extensions import db
from gaia_app.state import gaia

log = logging.getLogger("gaia.health")

blp = Blueprint("health", __name__, description="Health checks (no credentials needed)")

REMOTE_TIMEOUT = (1.0, 2.0)


def database_name(url) -> str:
    """The database's name, never its host or credentials (for SQLite, the file's name)."""
    if url.get_backend_name() == "sqlite":
        return (url.database or ":memory:").rsplit("/", 1)[-1]
    return url.database or ""


def _database_check(app: Flask) -> tuple[dict, list[dict]]:
    migrations = gaia(app).migrations
    heads = migrations.heads
    started = time.perf_counter()
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            latency_ms = round((time.perf_counter() - started) * 1000, 2)
            try:
                current = [
                    row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))
                ]
            except SQLAlchemyError:
                connection.rollback()
                current = None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        log.warning("health: database unreachable: %s", reason)
        database = {"status": "disconnected", "error": reason}
        return database, [{"name": "database", "status": "fail", "detail": reason}]

    head = heads[0] if len(heads) == 1 else list(heads)
    name = database_name(db.engine.url)
    if current is None:
        state, detail = "uninitialized", (
            f"the database `{name}` has no schema (no alembic_version table): run "
            "`flask --app wsgi db upgrade` against it, or point DATABASE_URL at the database the "
            "other services use (on Fly, the shared `postgres` database of gaia-db-<env>)"
        )
    elif sorted(current) == sorted(heads):
        state, detail = "current", None
    elif all(migrations.is_known(rev) for rev in current):
        state, detail = "behind", (
            f"the schema is at {', '.join(current) or 'nothing'} but this build needs {', '.join(heads)}: "
            "run `flask --app wsgi db upgrade`"
        )
    else:
        state, detail = "ahead", (
            f"the schema is at {', '.join(current)}, which this build does not know: "
            "a newer build migrated it; deploy that build everywhere"
        )
    database = {
        "status": "connected",
        "name": name,
        "latency_ms": latency_ms,
        "migrations": {
            "current": (current[0] if current and len(current) == 1 else current),
            "head": head,
            "status": state,
        },
    }
    checks = [{"name": "database", "status": "pass", "detail": f"{latency_ms} ms"}]
    checks.append(
        {"name": "migrations", "status": "pass" if state == "current" else "warn", "detail": detail or state}
    )
    return database, checks


def _broker_check(app: Flask) -> tuple[dict, list[dict]]:
    settings = gaia(app).settings
    if not settings.redis_url:
        return (
            {"status": "embedded", "detail": "no REDIS_URL: jobs and caches run in-process"},
            [{"name": "broker", "status": "pass", "detail": "embedded"}],
        )
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
        started = time.perf_counter()
        client.ping()
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        client.close()
    except redis.RedisError as exc:
        return (
            {"status": "disconnected", "error": str(exc)},
            [{"name": "broker", "status": "warn", "detail": str(exc)}],
        )
    return {"status": "connected", "latency_ms": latency_ms}, [
        {"name": "broker", "status": "pass", "detail": f"{latency_ms} ms"}
    ]


def _remote_check(name: str, url: str) -> dict:
    try:
        response = requests.get(f"{url}/health", timeout=REMOTE_TIMEOUT)
        body = response.json()
        return {"status": body.get("status", "unknown"), "version": body.get("version"), "url": url}
    except (requests.RequestException, ValueError) as exc:
        return {"status": "unreachable", "error": type(exc).__name__, "url": url}


def _remote_checks(app: Flask) -> tuple[dict, list[dict], list[dict]]:
    settings = gaia(app).settings
    targets = {
        name: url for name, url in settings.service_urls.items() if name not in settings.services
    }
    if not targets:
        return {}, [], []
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        results = dict(zip(targets, pool.map(lambda item: _remote_check(*item), targets.items())))
    skew = [
        {"service": name, "version": result["version"], "expected": settings.build_id}
        for name, result in results.items()
        if result.get("version") and result["version"] != settings.build_id
    ]
    checks = [
        {
            "name": f"remote:{name}",
            "status": "pass" if result["status"] == "healthy" else "warn",
            "detail": result["status"],
        }
        for name, result in results.items()
    ]
    return results, skew, checks


def health_report(app: Flask) -> tuple[dict, int]:
    settings = gaia(app).settings
    database, checks = _database_check(app)
    broker, broker_checks = _broker_check(app)
    remote, skew, remote_checks = _remote_checks(app)
    checks += broker_checks + remote_checks
    if skew:
        checks.append({
            "name": "version_skew",
            "status": "warn",
            "detail": "services run different builds: deploy all services together",
        })

    if database["status"] != "connected":
        status, code = "unhealthy", 503
    elif any(check["status"] != "pass" for check in checks):
        status, code = "degraded", 200
    else:
        status, code = "healthy", 200
    report = {
        "status": status,
        "service": settings.service_label,
        "services": list(settings.services),
        "environment": settings.environment,
        "version": settings.build_id,
        "database": database,
        "broker": broker,
        "remote": remote,
        "version_skew": skew,
        "checks": checks,
    }
    return report, code


@blp.route("/health")
@blp.doc(
    summary="Full health report",
    responses={"200": {"description": "healthy or degraded"}, "503": {"description": "unhealthy"}},
)
def health():
    report, code = health_report(current_app._get_current_object())
    return jsonify(report), code


@blp.route("/health/live")
@blp.doc(summary="Liveness: answers without touching anything", responses={"200": {
    "description": "The process answers",
    "content": {"application/json": {"schema": {
        "type": "object", "required": ["status"], "properties": {"status": {"enum": ["alive"]}},
    }}},
}})
def live():
    return jsonify({"status": "alive"})
