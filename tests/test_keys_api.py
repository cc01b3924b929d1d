"""The API-key lifecycle over HTTP: create, list, get, revoke, rotate, expiry, scopes."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from gaia_app.extensions import db
from tests.conftest import problem_of

KEYS = "/api/v0.2/keys"
MODELS = "/api/v0.2/models"


def sign_up(client, email="player@example.com"):
    """A signed-in player: headers with their access token."""
    tokens = client.post(
        "/api/v0.2/auth/register", json={"email": email, "password": "correct horse battery"}
    ).get_json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
def session(client):
    return lambda email="player@example.com": sign_up(client, email)


def test_create_shows_the_key_once_and_it_works(app, client, session):
    headers = session()
    created = client.post(KEYS, json={"name": "unity-client", "expires_at": None}, headers=headers)
    assert created.status_code == 201
    body = created.get_json()
    key = body["key"]
    assert key.startswith("gaia_local_") and body["hint"].endswith(key[-4:])
    assert body["scopes"] == ["assets", "chat"] and body["state"] == "active"
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200

    listed = client.get(KEYS, headers=headers).get_json()
    assert [k["id"] for k in listed["keys"]] == [body["id"]]
    one = client.get(f"{KEYS}/{body['id']}", headers=headers).get_json()
    for view in (listed["keys"][0], one):
        assert "key" not in view and "key_hash" not in view and key not in str(view)
    with app.app_context():
        stored = db.session.execute(text("SELECT key_hash FROM api_keys")).scalar()
    assert key not in stored and stored not in str(listed)


def test_scopes_and_expiry_on_creation(timed_app, clock):
    client = timed_app.test_client()
    headers = sign_up(client)
    chat_only = client.post(KEYS, json={"name": "npc", "expires_at": None, "scopes": ["chat"]}, headers=headers).get_json()
    assert chat_only["scopes"] == ["chat"]
    assert client.get(MODELS, headers={"X-API-Key": chat_only["key"]}).status_code == 200
    problem_of(client.post(KEYS, json={"name": "x", "expires_at": None, "scopes": ["admin"]}, headers=headers), 403)
    problem_of(client.post(KEYS, json={"name": "x", "expires_at": None, "scopes": ["root"]}, headers=headers), 422)
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    problem_of(client.post(KEYS, json={"name": "x", "expires_at": past}, headers=headers), 422)
    soon = (clock.now() + timedelta(seconds=1)).isoformat()
    short = client.post(KEYS, json={"name": "brief", "expires_at": soon}, headers=headers).get_json()
    assert client.get(MODELS, headers={"X-API-Key": short["key"]}).status_code == 200
    clock.advance(1.1)
    body = problem_of(client.get(MODELS, headers={"X-API-Key": short["key"]}), 401)
    assert "expired" in body["detail"]
    assert client.get(f"{KEYS}/{short['id']}", headers=headers).get_json()["state"] == "expired"


@pytest.mark.parametrize(
    "payload",
    [{}, {"name": ""}, {"name": "x" * 101}, {"name": 7}, {"name": "ok", "scopes": "chat"},
     {"name": "ok", "expires_at": "tomorrow"}, {"name": "ok", "rate_limit": "lots"}],
)
def test_malformed_key_requests_are_422(client, session, payload):
    problem_of(client.post(KEYS, json=payload, headers=session()), 422)


def test_revoke_takes_effect_and_is_idempotent(client, session):
    headers = session()
    created = client.post(KEYS, json={"name": "k", "expires_at": None}, headers=headers).get_json()
    assert client.get(MODELS, headers={"X-API-Key": created["key"]}).status_code == 200
    assert client.delete(f"{KEYS}/{created['id']}", headers=headers).status_code == 204
    # The same process learns of it at once (the cache entry is dropped on commit).
    body = problem_of(client.get(MODELS, headers={"X-API-Key": created["key"]}), 401)
    assert "revoked" in body["detail"]
    assert client.delete(f"{KEYS}/{created['id']}", headers=headers).status_code == 204
    assert client.get(f"{KEYS}/{created['id']}", headers=headers).get_json()["state"] == "revoked"


def test_rotate_keeps_the_old_key_for_the_grace_period(timed_app, clock):
    client = timed_app.test_client()
    headers = sign_up(client)
    old = client.post(KEYS, json={"name": "game", "expires_at": None, "scopes": ["chat"]}, headers=headers).get_json()
    rotated = client.post(f"{KEYS}/{old['id']}/rotate", json={"grace_seconds": 2}, headers=headers)
    assert rotated.status_code == 201
    new = rotated.get_json()
    assert new["key"] != old["key"] and new["replaces"] == old["id"]
    assert new["scopes"] == ["chat"] and new["name"] == "game"
    assert new["old_key_expires_at"]
    assert client.get(MODELS, headers={"X-API-Key": old["key"]}).status_code == 200
    assert client.get(MODELS, headers={"X-API-Key": new["key"]}).status_code == 200
    clock.advance(1.9)
    assert client.get(MODELS, headers={"X-API-Key": old["key"]}).status_code == 200
    clock.advance(0.2)
    problem_of(client.get(MODELS, headers={"X-API-Key": old["key"]}), 401)
    assert client.get(MODELS, headers={"X-API-Key": new["key"]}).status_code == 200
    view = client.get(f"{KEYS}/{old['id']}", headers=headers).get_json()
    assert view["replaced_by_id"] == new["id"] and view["state"] == "expired"
    # An expired (rotated) key cannot be rotated again.
    problem_of(client.post(f"{KEYS}/{old['id']}/rotate", json={}, headers=headers), 409)


def test_rotate_without_grace_stops_the_old_key_at_once(client, session):
    headers = session()
    old = client.post(KEYS, json={"name": "game", "expires_at": None}, headers=headers).get_json()
    client.post(f"{KEYS}/{old['id']}/rotate", json={"grace_seconds": 0}, headers=headers)
    problem_of(client.get(MODELS, headers={"X-API-Key": old["key"]}), 401)
    problem_of(client.post(f"{KEYS}/{old['id']}/rotate", json={"grace_seconds": -1}, headers=headers), 422)


def test_someone_elses_key_is_404_everywhere(client, session):
    alice = session("alice@example.com")
    bob = session("bob@example.com")
    alices = client.post(KEYS, json={"name": "mine", "expires_at": None}, headers=alice).get_json()
    for response in (
        client.get(f"{KEYS}/{alices['id']}", headers=bob),
        client.delete(f"{KEYS}/{alices['id']}", headers=bob),
        client.post(f"{KEYS}/{alices['id']}/rotate", json={}, headers=bob),
    ):
        problem_of(response, 404)
    assert client.get(KEYS, headers=bob).get_json()["keys"] == []
    problem_of(client.get(f"{KEYS}?user_id={uuid.uuid4()}", headers=bob), 404)
    # Alice's key survived Bob's attempts.
    assert client.get(MODELS, headers={"X-API-Key": alices["key"]}).status_code == 200
    problem_of(client.get(f"{KEYS}/not-a-uuid", headers=bob), 404)


def test_a_plain_api_key_cannot_manage_keys(client, session):
    created = client.post(KEYS, json={"name": "k", "expires_at": None}, headers=session()).get_json()
    body = problem_of(client.post(KEYS, json={"name": "more", "expires_at": None}, headers={"X-API-Key": created["key"]}), 403)
    assert "session" in body["detail"]
    problem_of(client.get(KEYS), 401)


def test_admin_key_manages_anyones_keys(client, session, make):
    session("carol@example.com")
    carol_key = make.key("carol@example.com")
    make.user("root@example.com", admin=True)
    admin = {"X-API-Key": make.key("root@example.com", scopes=["admin"])}
    with_limit = client.post(KEYS, json={"name": "bot", "expires_at": None, "rate_limit": "5/minute"}, headers=admin)
    assert with_limit.status_code == 201 and with_limit.get_json()["rate_limit"] == "5/minute"
    carol_id = client.get("/api/v0.2/auth/me", headers={"X-API-Key": carol_key}).get_json()["id"]
    listed = client.get(f"{KEYS}?user_id={carol_id}", headers=admin).get_json()["keys"]
    assert len(listed) == 1
    assert client.delete(f"{KEYS}/{listed[0]['id']}", headers=admin).status_code == 204
    problem_of(client.get(MODELS, headers={"X-API-Key": carol_key}), 401)


def test_only_admins_set_rate_limits(client, session):
    problem_of(client.post(KEYS, json={"name": "k", "expires_at": None, "rate_limit": "9999/second"}, headers=session()), 403)


def test_key_list_is_paginated(client, session):
    headers = session()
    made = [client.post(KEYS, json={"name": f"k{i}", "expires_at": None}, headers=headers).get_json()["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        url = f"{KEYS}?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=headers).get_json()
        assert len(page["keys"]) <= 2
        seen += [k["id"] for k in page["keys"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == made
    problem_of(client.get(f"{KEYS}?cursor=garbage", headers=headers), 422)
    problem_of(client.get(f"{KEYS}?limit=0", headers=headers), 422)


def test_a_session_must_decide_when_its_key_expires(client, session, make):
    """A key outlives the session that made it: with a JWT, `expires_at` (a time or null) is
    required; with a key, leaving it out still means a key that never expires."""
    headers = session()
    body = problem_of(client.post(KEYS, json={"name": "undecided"}, headers=headers), 422)
    assert body["errors"][0]["field"] == "expires_at" and "null" in body["detail"]
    assert client.get(KEYS, headers=headers).get_json()["keys"] == []

    forever = client.post(KEYS, json={"name": "forever", "expires_at": None}, headers=headers)
    assert forever.status_code == 201 and forever.get_json()["expires_at"] is None
    later = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
    dated = client.post(KEYS, json={"name": "dated", "expires_at": later}, headers=headers)
    assert dated.status_code == 201 and dated.get_json()["expires_at"]

    make.user("admin@example.com", admin=True)
    admin_key = make.key("admin@example.com", scopes=["admin"])
    by_key = client.post(KEYS, json={"name": "by-key"}, headers={"X-API-Key": admin_key})
    assert by_key.status_code == 201 and by_key.get_json()["expires_at"] is None
