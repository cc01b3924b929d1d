"""The database engine: pool settings, SQLite tuning, and pings only where they help."""

from __future__ import annotations

import weakref
from pathlib import Path

from flask import Flask
from sqlalchemy import event

from gaia_app.extensions import db, migrate
from gaia_app.runtime.clock import Clock

# A pooled connection given back less than this long ago is not pinged again on checkout.
PING_AFTER_IDLE = 1.0


def engine_options(settings) -> dict:
    if settings.is_sqlite:
        return {"connect_args": {"timeout": 15}}
    return {
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        # A gevent worker serves many requests at once: connections beyond the pool's size
        # are closed when given back, so a small pool means reconnecting under load.
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "connect_args": {"connect_timeout": settings.database_connect_timeout},
    }


def init_database(app: Flask, settings, migrations_dir: Path, clock: Clock) -> None:
    from gaia_app import models  # noqa: F401  (registers the tables on the metadata)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(migrations_dir), render_as_batch=True, compare_type=True)
    if settings.is_sqlite:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        with app.app_context():
            _tune_sqlite(db.engine)
    else:
        with app.app_context():
            _ping_only_idle_connections(db.engine, clock)


def _ping_only_idle_connections(engine, clock: Clock) -> None:
    """`pool_pre_ping` costs a round trip on every checkout; skip it for a connection that was
    in use a moment ago. A database restart within that moment fails one request, after
    which SQLAlchemy replaces the whole pool."""
    given_back: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    ping = engine.dialect.do_ping

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection, _record):
        if dbapi_connection is not None:
            given_back[dbapi_connection] = clock.monotonic()

    def ping_if_idle(dbapi_connection) -> bool:
        since = given_back.get(dbapi_connection)
        if since is not None and clock.monotonic() - since < PING_AFTER_IDLE:
            return True
        return ping(dbapi_connection)

    engine.dialect.do_ping = ping_if_idle


def _tune_sqlite(engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        # WAL lets gunicorn workers read while one writes; foreign keys make cascades real.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
