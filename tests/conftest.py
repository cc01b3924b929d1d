"""Shared fixtures: every test that uses `app` runs on SQLite and on real PostgreSQL.

PostgreSQL tests use a database made for this run and dropped at its end. Without a
reachable PostgreSQL they are skipped, unless GAIA_TEST_REQUIRE_POSTGRES=1 (CI), where
that is a failure.

Apps are built from a complete environment of their own (`create_app(environ=...)`): what a
developer's shell exports (OPENAI_API_KEY, OLLAMA_BASE_URL, DATABASE_URL, ...) never reaches
them. Time-driven behaviour is tested with `FakeClock`, moved by hand, not with sleeps.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import event, text

from gaia_app import accounts, create_app
from gaia_app.database import configure_migrations
from gaia_app.extensions import db
from gaia_app.runtime.clock import Clock
from gaia_app.state import gaia

POSTGRES_ADMIN_URL = os.environ.get(
    "GAIA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("GAIA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_POSTGRES = os.environ.get("GAIA_TEST_REQUIRE_POSTGRES") == "1"
REQUIRE_REDIS = os.environ.get("GAIA_TEST_REQUIRE_REDIS") == "1"


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return None
    except Exception as exc:  # any failure means "not here"
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}"


def _skip_or_fail(reason: str, required: bool) -> None:
    if required:
        pytest.fail(reason)
    pytest.skip(reason)


class PostgresDatabases:
    """Makes throw-away databases and drops them when the run ends."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def create(self) -> str:
        import psycopg

        name = f"gaia_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
        # The postgres:// form on purpose: it is what Fly hands out.
        return base.replace("postgresql://", "postgres://", 1) + "/" + name

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            for name in self.made:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    problem = _postgres_problem()
    if problem:
        _skip_or_fail(problem, REQUIRE_POSTGRES)
    databases = PostgresDatabases()
    yield databases
    databases.drop_all()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        _skip_or_fail(f"Redis not reachable at {REDIS_TEST_URL}: {exc}", REQUIRE_REDIS)
    return REDIS_TEST_URL


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(backend, tmp_path_factory, request) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'gaia.db'}"
    return request.getfixturevalue("postgres").create()


class FakeClock(Clock):
    """Time that moves only when a test says so (`advance`)."""

    def __init__(self) -> None:
        self._monotonic = 1000.0
        self._time = time.time()

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._time

    def advance(self, seconds: float) -> None:
        self._monotonic += seconds
        self._time += seconds


def make_app(database_url: str, tmp_path_factory, *, clock: Clock | None = None, **overrides):
    """An app from nothing but these settings (the process environment is not read)."""
    settings = {
        "DATABASE_URL": database_url,
        "GAIA_INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")),
        "TESTING": True,
        "LAST_USED_FLUSH_INTERVAL": "3600",
        # Limits get their own tests; elsewhere they would only make tests depend on each other.
        "RATE_LIMIT_DEFAULT": "100000/minute",
        "AUTH_RATE_LIMIT": "100000/minute",
    }
    settings.update(overrides)
    app = create_app(settings, environ={}, clock=clock)
    # No flush thread (nor flush at exit, into databases dropped by then): tests flush.
    gaia(app).last_used.background = False
    gaia(app).usage.background = False
    return app


def upgrade(app) -> None:
    from flask_migrate import upgrade as run_upgrade

    configure_migrations(app)
    with app.app_context():
        run_upgrade()


@pytest.fixture(scope="session")
def _session_app(database_url, tmp_path_factory):
    app = make_app(database_url, tmp_path_factory)
    upgrade(app)
    return app


def _reset(app) -> None:
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM usage_events"))
            connection.execute(text("DELETE FROM asset_jobs"))
            connection.execute(text("DELETE FROM assets"))
            connection.execute(text("DELETE FROM messages"))
            connection.execute(text("DELETE FROM conversations"))
            connection.execute(text("DELETE FROM user_persona_preferences"))
            connection.execute(text("DELETE FROM personas WHERE owner_id IS NOT NULL"))
            connection.execute(text("DELETE FROM refresh_tokens"))
            connection.execute(text("DELETE FROM api_keys"))
            connection.execute(text("DELETE FROM users"))
    state = gaia(app)
    state.authenticator.cache.clear()
    state.last_used.discard_pending()
    state.usage.discard_pending()
    # A test that ran a job in process left a runner and its sweeper going, and perhaps its
    # own event publisher: the next test starts without them.
    state.assets.close()
    state.assets._dispatcher = None
    state.assets._events = None


@pytest.fixture
def app(_session_app):
    """The migrated app of this backend, emptied after each test."""
    yield _session_app
    _reset(_session_app)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed_app(_session_app, database_url, tmp_path_factory, clock):
    """The migrated database of this backend, served by an app whose time `clock` moves."""
    app = make_app(database_url, tmp_path_factory, clock=clock)
    yield app
    _reset(app)
    _reset(_session_app)  # the shared app's caches may hold what this test made


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Accounts:
    """Makes users and keys through the same service functions the CLI uses."""

    def __init__(self, app) -> None:
        self.app = app

    def user(self, email: str = "player@example.com", *, admin: bool = False, active: bool = True):
        with self.app.app_context():
            user = accounts.create_user(email, is_admin=admin)
            user.is_active = active
            db.session.commit()
            return user.id

    def key(
        self,
        email: str = "player@example.com",
        *,
        scopes=None,
        expires_at: datetime | None = None,
        name: str = "test",
    ) -> str:
        with self.app.app_context():
            user = accounts.find_user_by_email(email)
            if user is None:
                user = accounts.create_user(email)
            _, plaintext = accounts.create_api_key(
                user,
                name=name,
                environment=gaia(self.app).settings.environment,
                scopes=scopes,
                expires_at=expires_at,
            )
            db.session.commit()
            return plaintext


@pytest.fixture
def make(app) -> Accounts:
    return Accounts(app)


def problem_of(response, status: int) -> dict:
    """Assert a problem+json answer with this status; returns its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body


class QueryCounter:
    """Counts the SQL statements an engine runs (the database's own view of the work)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        self.statements.append(statement)

    def __enter__(self):
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self._record)

    def __len__(self) -> int:
        return len(self.statements)


@pytest.fixture
def count_queries(app):
    def counter() -> QueryCounter:
        with app.app_context():
            return QueryCounter(db.engine)

    return counter
