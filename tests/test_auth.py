"""API-key authentication through `require_auth`, on SQLite and PostgreSQL."""

import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from gaia_app.identity.apikeys import generate_api_key, hash_api_key
from gaia_app.errors import APIError
from gaia_app.extensions import db
from gaia_app.identity import require_auth
from gaia_app.state import gaia
from tests.conftest import Accounts, _reset, make_app, problem_of

MODELS = "/api/v0.2/models"


def test_key_works_in_both_header_forms(client, make):
    key = make.key()
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
    assert client.get(MODELS, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get(MODELS, headers={"Authorization": f"bearer   {key}  "}).status_code == 200


def test_missing_credentials_are_401_with_a_challenge(client):
    response = client.get(MODELS)
    body = problem_of(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "X-API-Key" in body["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"X-API-Key": "hunter2"},
        {"X-API-Key": "gaia_local_short"},
        {"X-API-Key": "gaia_local_" + "A" * 10_000},
    ],
)
def test_garbage_credentials_are_401(client, headers):
    problem_of(client.get(MODELS, headers=headers), 401)


def test_checksum_refuses_a_typo_before_any_query(app, client, make, count_queries):
    key = make.key()
    typo = key[:-8] + ("x" if key[-8] != "x" else "y") + key[-7:]
    with count_queries() as queries:
        body = problem_of(client.get(MODELS, headers={"X-API-Key": typo}), 401)
    assert "checksum" in body["detail"]
    assert len(queries) == 0


def test_key_of_another_environment_is_refused_before_any_query(client, count_queries):
    foreign = generate_api_key("prod")
    with count_queries() as queries:
        body = problem_of(client.get(MODELS, headers={"X-API-Key": foreign}), 401)
    assert "'prod'" in body["detail"]
    assert len(queries) == 0


def test_unknown_well_formed_key_is_401_and_its_refusal_is_cached(client, count_queries):
    unknown = generate_api_key("local")
    with count_queries() as queries:
        problem_of(client.get(MODELS, headers={"X-API-Key": unknown}), 401)
        problem_of(client.get(MODELS, headers={"X-API-Key": unknown}), 401)
        problem_of(client.get(MODELS, headers={"X-API-Key": unknown}), 401)
    assert len(queries) == 1


def test_a_valid_key_costs_no_query_once_cached(client, make, count_queries):
    key = make.key()
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
    with count_queries() as queries:
        for _ in range(20):
            assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
    assert len(queries) == 0


def test_revoked_key_is_refused_once_the_cache_entry_expires(timed_app, clock):
    """Revoked in another process (no message reaches this one): the entry's TTL bounds it."""
    from gaia_app import accounts

    client = timed_app.test_client()
    key = Accounts(timed_app).key()
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
    with timed_app.app_context():
        row = accounts.list_api_keys()[0]
        row.is_active = False  # as another process would: no invalidation here
        db.session.commit()
    clock.advance(0.9)
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200  # still cached
    clock.advance(0.2)
    body = problem_of(client.get(MODELS, headers={"X-API-Key": key}), 401)
    assert "revoked" in body["detail"]


def test_expired_key_is_refused_even_from_the_cache(_session_app, database_url, tmp_path_factory, clock):
    app = make_app(database_url, tmp_path_factory, clock=clock, AUTH_CACHE_TTL="60")
    client = app.test_client()
    # Expiry on the app's clock, which stands still until advanced (however slow the machine).
    key = Accounts(app).key(expires_at=datetime.fromtimestamp(clock.time(), timezone.utc) + timedelta(seconds=1))
    try:
        assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
        clock.advance(1.5)
        assert gaia(app).authenticator.cache.get(hash_api_key(key)) is not None
        body = problem_of(client.get(MODELS, headers={"X-API-Key": key}), 401)
        assert "expired" in body["detail"]
    finally:
        _reset(app)


def test_deactivated_user_loses_access(app, client, make):
    from gaia_app import accounts

    key = make.key("gone@example.com")
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
    with app.app_context():
        accounts.deactivate_user(accounts.find_user_by_email("gone@example.com"))
        db.session.commit()
    gaia(app).authenticator.cache.clear()
    body = problem_of(client.get(MODELS, headers={"X-API-Key": key}), 401)
    assert "deactivated" in body["detail"]


def test_only_the_hash_is_stored(app, make):
    key = make.key()
    with app.app_context():
        rows = db.session.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert len(rows) == 1
    assert rows[0]["key_hash"] == hash_api_key(key)
    for value in rows[0].values():
        assert key not in str(value)
    assert rows[0]["hint"].endswith(key[-4:])


def test_no_key_reaches_the_logs(app, client, make, caplog):
    caplog.set_level(logging.DEBUG)
    key = make.key()
    client.get(MODELS, headers={"X-API-Key": key})
    client.get(MODELS, headers={"X-API-Key": key[:-1] + ("Z" if key[-1] != "Z" else "Y")})
    assert key not in caplog.text
    assert key[12:40] not in caplog.text


def test_last_used_is_collected_in_memory_and_written_in_one_batch(app, client, make, count_queries):
    key = make.key()
    with count_queries() as queries:
        for _ in range(5):
            assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
    assert not [s for s in queries.statements if s.lstrip().upper().startswith("UPDATE")]
    with app.app_context():
        assert db.session.execute(text("SELECT last_used_at FROM api_keys")).scalar() is None
    written = gaia(app).last_used.flush()
    assert written == 1
    with app.app_context():
        assert db.session.execute(text("SELECT last_used_at FROM api_keys")).scalar() is not None


def _guarded_view(app, *scopes):
    @require_auth(*scopes)
    def view():
        return "ok"

    return view


def test_scopes_are_enforced(app, make):
    chat_key = make.key(scopes=["chat"])
    view = _guarded_view(app, "assets")
    with app.test_request_context(headers={"X-API-Key": chat_key}):
        with pytest.raises(APIError) as caught:
            view()
    assert caught.value.status == 403
    with app.test_request_context(headers={"X-API-Key": chat_key}):
        assert _guarded_view(app, "chat")() == "ok"


def test_admin_scope_counts_only_for_admin_users(app, make):
    make.user("boss@example.com", admin=True)
    admin_key = make.key("boss@example.com", scopes=["admin"])
    with app.test_request_context(headers={"X-API-Key": admin_key}):
        assert _guarded_view(app, "admin")() == "ok"
        assert _guarded_view(app, "assets")() == "ok"
    # A key that holds `admin` while its user is no admin (demoted later) gets no admin right.
    with app.app_context():
        db.session.execute(text("UPDATE users SET is_admin = :no"), {"no": False})
        db.session.commit()
    gaia(app).authenticator.cache.clear()
    with app.test_request_context(headers={"X-API-Key": admin_key}):
        with pytest.raises(APIError) as caught:
            _guarded_view(app, "admin")()
    assert caught.value.status == 403


def test_jwt_shaped_garbage_is_401(client):
    body = problem_of(client.get(MODELS, headers={"Authorization": "Bearer a.b.c"}), 401)
    assert "JWT" in body["detail"]


def test_the_background_thread_writes_last_used(database_url, tmp_path_factory, _session_app, make):
    from tests.conftest import make_app

    app = make_app(database_url, tmp_path_factory, LAST_USED_FLUSH_INTERVAL="0.1")
    gaia(app).last_used.background = True
    key = make.key()
    assert app.test_client().get(MODELS, headers={"X-API-Key": key}).status_code == 200
    deadline = time.monotonic() + 5
    written = None
    while written is None and time.monotonic() < deadline:
        time.sleep(0.1)
        with app.app_context():
            written = db.session.execute(text("SELECT last_used_at FROM api_keys")).scalar()
    assert written is not None


def test_an_answer_loaded_before_an_invalidation_is_not_cached_after_it(app):
    from gaia_app.identity.cache import CredentialCache
    from gaia_app.identity.principal import Refusal
    from gaia_app.runtime.clock import Clock

    cache = CredentialCache(Clock())
    generation = cache.generation
    cache.drop_user(uuid.uuid4())  # a change arrives while the answer was being loaded
    cache.put("k", Refusal("stale"), 60, generation)
    assert cache.get("k") is None
    cache.put("k", Refusal("fresh"), 60, cache.generation)
    assert cache.get("k") == Refusal("fresh")
