"""PostgreSQL connections: pinged on checkout only after being idle, and replaced when the
server dropped them."""

from __future__ import annotations


import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from gaia_app.database import PING_AFTER_IDLE
from gaia_app.extensions import db
from tests.conftest import POSTGRES_ADMIN_URL, make_app, upgrade


@pytest.fixture
def pg_app(postgres, tmp_path_factory, clock):
    app = make_app(postgres.create(), tmp_path_factory, clock=clock)
    upgrade(app)
    return app


def _backend_pids(app) -> set[int]:
    with app.app_context(), db.engine.connect() as connection:
        name = connection.execute(text("SELECT current_database()")).scalar_one()
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall()
    return {row[0] for row in rows}


def test_a_connection_in_use_a_moment_ago_is_not_pinged(postgres, tmp_path_factory, monkeypatch, clock):
    pings = []
    original = PGDialect_psycopg.do_ping

    def counting(self, dbapi_connection):
        pings.append(dbapi_connection)
        return original(self, dbapi_connection)

    # Before the app is made: it wraps the dialect's ping when it starts.
    monkeypatch.setattr(PGDialect_psycopg, "do_ping", counting)
    app = make_app(postgres.create(), tmp_path_factory, clock=clock)
    with app.app_context():
        for _ in range(5):
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        assert pings == []
        clock.advance(PING_AFTER_IDLE + 0.1)
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert len(pings) == 1


def test_connections_the_server_dropped_are_replaced(pg_app, clock):
    client = pg_app.test_client()
    assert client.get("/health").status_code == 200
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        for pid in _backend_pids(pg_app):
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    clock.advance(PING_AFTER_IDLE + 0.1)
    # Idle long enough to be pinged: the dead connection is found and replaced, no error.
    assert client.get("/health").status_code == 200
