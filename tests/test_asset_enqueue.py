"""What making a job costs and guarantees: its two rows in one statement on PostgreSQL (one
round trip, committed by the statement itself), in the request's transaction where one is
open already, and the task sent through Celery's own publishing path (so its signals run and
the request id rides along) only once the rows are committed. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from celery.signals import before_task_publish
from sqlalchemy import event, func, select

from blueprints.asset import jobs as job_rules
from gaia_app.celery_app import celery_for
from gaia_app.extensions import db
from gaia_app.identity.principal import Principal
from gaia_app.models import Asset, AssetJob
from gaia_app.state import gaia
from tests.conftest import REQUIRE_REDIS, Accounts, _reset, _skip_or_fail, make_app
from tests.test_e2e_asset_worker import RedisServer

GENERATE = "/api/v0.2/assets/generate"
BODY = {"category": "image", "description": "a red apple", "options": {"width": 64, "height": 64}}


def committed_jobs() -> int:
    """Job rows another connection sees: the committed ones. Call in an app context."""
    with db.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(AssetJob)).scalar_one()


def committed_assets() -> int:
    with db.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(Asset)).scalar_one()


@pytest.fixture
def sent(app, monkeypatch):
    """The job ids handed to the dispatcher (nothing runs them)."""
    calls = []
    monkeypatch.setattr(gaia(app).assets, "dispatch", lambda job_id, *, delay=0.0: calls.append(str(job_id)))
    return calls


def alice(app, make) -> Principal:
    user_id = make.user("alice@example.com")
    return Principal(user_id=user_id, auth_type="api_key", scopes=frozenset({"assets"}), is_admin=False)


def test_a_new_job_is_one_statement_on_postgresql_and_two_inserts_elsewhere(
        app, client, make, sent, count_queries, backend):
    headers = {"X-API-Key": make.key("alice@example.com")}
    client.post(GENERATE, json=BODY, headers=headers)  # the key's first use reads it once
    with count_queries() as plain:
        assert client.post(GENERATE, json=BODY, headers=headers).status_code == 202
    with count_queries() as keyed:
        assert client.post(GENERATE, json=BODY, headers={**headers, "Idempotency-Key": "k"}).status_code == 202
    with count_queries() as replayed:
        assert client.post(GENERATE, json=BODY, headers={**headers, "Idempotency-Key": "k"}).status_code == 202
    writes = [s.split()[0] for s in plain.statements]
    if backend == "postgresql":
        assert writes == ["WITH"] and "INSERT INTO assets" in plain.statements[0]
        assert "INSERT INTO asset_jobs" in plain.statements[0]
    else:
        assert writes == ["INSERT", "INSERT"]
    assert len(keyed) == len(plain) + 1 and keyed.statements[0].startswith("SELECT")
    assert len(replayed) == 1 and replayed.statements[0].startswith("SELECT")
    assert len(sent) == 3
    with app.app_context():
        assert committed_jobs() == committed_assets() == 3


def test_the_one_statement_commits_the_rows_itself_when_no_transaction_is_open(app, make, sent, backend):
    principal = alice(app, make)
    with app.app_context():
        job, made = job_rules.create_job(principal, gaia(app).assets, dict(BODY), None, gaia(app).clock.now())
        # Seen by another connection before the session commits: on PostgreSQL the statement
        # was its own transaction; on SQLite the two INSERTs wait for the route's commit.
        assert made and committed_jobs() == (1 if backend == "postgresql" else 0)
        assert sent == []  # sent only once the session commits
        db.session.commit()
        assert sent == [str(job.id)] and committed_jobs() == committed_assets() == 1
        row = db.session.get(AssetJob, job.id)
        assert (row.status, row.asset_id, row.attempts, row.progress) == ("queued", job.asset_id, 0, 0)
        assert db.session.get(Asset, job.asset_id).status == "pending"
        db.session.remove()


def test_a_job_made_inside_an_open_transaction_is_written_and_undone_with_it(app, make, sent):
    principal = alice(app, make)
    with app.app_context():
        db.session.execute(select(1))  # the request has begun its transaction
        job_rules.create_job(principal, gaia(app).assets, dict(BODY), None, gaia(app).clock.now())
        assert committed_jobs() == 0
        db.session.rollback()
        assert committed_jobs() == committed_assets() == 0 and sent == []

        db.session.execute(select(1))
        job, _ = job_rules.create_job(principal, gaia(app).assets, dict(BODY), "key-1", gaia(app).clock.now())
        assert committed_jobs() == 0
        db.session.commit()
        assert committed_jobs() == committed_assets() == 1 and sent == [str(job.id)]
        db.session.remove()


# -- the send, through Celery ---------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(redis_url, tmp_path_factory):
    """A redis-server of this module's own: nothing else consumes its `celery` queue."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    if server.binary is None:
        _skip_or_fail("redis-server is not installed", REQUIRE_REDIS)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def celery_app(_session_app, database_url, tmp_path_factory, broker):
    """The migrated database, served by an app whose jobs go to Celery on `broker`."""
    broker.client().flushall()
    app = make_app(database_url, tmp_path_factory, REDIS_URL=broker.url)
    yield app
    celery_for(app).close()
    _reset(app)


def test_a_job_goes_through_celerys_publishing_path_after_its_commit(celery_app, broker):
    published = []

    def record(sender=None, body=None, headers=None, routing_key=None, **_kwargs):
        job_id = uuid.UUID(body[0][0])
        with db.engine.connect() as connection:  # another connection: committed rows only
            committed = connection.execute(select(AssetJob.status).where(AssetJob.id == job_id)).scalar()
        published.append((sender, body[0], headers.get("gaia_request_id"), routing_key, committed))

    before_task_publish.connect(record, weak=False)
    try:
        key = {"X-API-Key": Accounts(celery_app).key("carol@example.com")}
        response = celery_app.test_client().post(
            GENERATE, json=BODY, headers={**key, "X-Request-ID": "enqueue-test-1"})
    finally:
        before_task_publish.disconnect(record)
    assert response.status_code == 202, response.get_data(as_text=True)
    job_id = response.get_json()["job_id"]
    assert published == [("gaia.assets.generate", [job_id], "enqueue-test-1", "celery", "queued")]
    queued = [json.loads(raw) for raw in broker.client().lrange("celery", 0, -1)]
    assert len(queued) == 1
    message = queued[0]
    assert message["headers"]["task"] == "gaia.assets.generate"
    assert message["headers"]["gaia_request_id"] == "enqueue-test-1"
    assert json.loads(base64.b64decode(message["body"]))[0] == [job_id]


def test_the_autocommit_connection_goes_back_to_the_pool_transactional(app, client, make, sent, backend):
    headers = {"X-API-Key": make.key("alice@example.com")}
    client.post(GENERATE, json=BODY, headers=headers)  # the key's first use reads it once
    during, returned = [], []
    with app.app_context():
        engine = db.engine

    def on_statement(connection, _cursor, _statement, _parameters, _context, _many):
        during.append(bool(getattr(connection.connection.dbapi_connection, "autocommit", False)))

    def on_checkin(dbapi_connection, _record):
        returned.append(bool(getattr(dbapi_connection, "autocommit", False)))

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "checkin", on_checkin)
    try:
        assert client.post(GENERATE, json=BODY, headers=headers).status_code == 202
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "checkin", on_checkin)
    # The one statement ran in autocommit on PostgreSQL; the pool got the connection back in
    # its usual transactional mode, whatever the next request does with it.
    assert during == ([True] if backend == "postgresql" else [False, False])
    assert returned == [False]
