"""The database: engine and pool settings, SQLite tuning, pings only where they help, and
the migrations (`flask db ...`, and which revision this build expects).

Flask-Migrate and alembic are imported only by a `flask db` command (or a test that migrates):
a web worker never loads them, which saves each worker about 10 MiB (see bench/README.md).
"""

from __future__ import annotations

import ast
import weakref
from functools import cached_property
from pathlib import Path

import click
from flask import Flask
from sqlalchemy import event

from gaia_app.constants import MIGRATIONS_DIR
from gaia_app.extensions import db
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


def init_database(app: Flask, settings, clock: Clock) -> None:
    from gaia_app import models  # noqa: F401  (registers the tables on the metadata)

    db.init_app(app)
    app.cli.add_command(_MigrationCommands(app))
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


def configure_migrations(app: Flask) -> click.Group:
    """Flask-Migrate for `app` (importing it and alembic); returns its `db` command group."""
    from flask_migrate import Migrate
    from flask_migrate.cli import db as commands

    if "migrate" not in app.extensions:
        Migrate(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True, compare_type=True)
    return commands


class _MigrationCommands(click.Group):
    """`flask db ...`: Flask-Migrate's command group, loaded when a command first needs it."""

    def __init__(self, app: Flask) -> None:
        super().__init__(name="db", help="Perform database migrations (Flask-Migrate).")
        self._app = app
        self._real: click.Group | None = None

    def _group(self) -> click.Group:
        if self._real is None:
            self._real = configure_migrations(self._app)
        return self._real

    def get_params(self, ctx):
        return self._group().get_params(ctx)

    def list_commands(self, ctx):
        return self._group().list_commands(ctx)

    def get_command(self, ctx, name):
        return self._group().get_command(ctx, name)

    def invoke(self, ctx):
        return self._group().invoke(ctx)


class MigrationInfo:
    """The revisions of this build, read once from `migrations/versions/*.py`.

    Each revision file assigns `revision` and `down_revision` literals; the heads are the
    revisions no other one builds on. Read with `ast` rather than alembic, so that `/health`
    costs a web worker no alembic import (a test checks both agree).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @cached_property
    def parents(self) -> dict[str, tuple[str, ...]]:
        """revision -> the revisions it builds on."""
        found = {}
        for path in sorted((self.directory / "versions").glob("*.py")):
            values = _literal_assignments(path, ("revision", "down_revision"))
            if isinstance(values.get("revision"), str):
                down = values.get("down_revision")
                found[values["revision"]] = tuple(down) if isinstance(down, (list, tuple)) else ((down,) if down else ())
        return found

    @cached_property
    def heads(self) -> tuple[str, ...]:
        built_on = {parent for parents in self.parents.values() for parent in parents}
        return tuple(sorted(rev for rev in self.parents if rev not in built_on))

    def is_known(self, revision: str) -> bool:
        return revision in self.parents


def _literal_assignments(path: Path, names: tuple[str, ...]) -> dict:
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            try:
                values[target.id] = ast.literal_eval(value)
            except ValueError:
                pass
    return values
