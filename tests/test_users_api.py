"""Admin users API: list, create, read, update, delete; non-admins get 403."""

import uuid

import pytest
from sqlalchemy import text

from gaia_app.extensions import db
from tests.conftest import problem_of

USERS = "/api/v0.2/users"
MODELS = "/api/v0.2/models"


@pytest.fixture
def admin(make):
    make.user("root@example.com", admin=True)
    return {"X-API-Key": make.key("root@example.com", scopes=["admin"])}


def test_non_admins_get_403_and_strangers_401(client, make):
    player = {"X-API-Key": make.key("player@example.com")}
    target = uuid.uuid4()
    for method, path in [("get", USERS), ("post", USERS), ("get", f"{USERS}/{target}"),
                         ("patch", f"{USERS}/{target}"), ("delete", f"{USERS}/{target}")]:
        problem_of(getattr(client, method)(path, headers=player, json={}), 403)
        problem_of(getattr(client, method)(path, json={}), 401)


def test_an_admin_users_key_without_admin_scope_is_not_enough(client, make):
    make.user("root@example.com", admin=True)
    limited = {"X-API-Key": make.key("root@example.com", scopes=["chat"])}
    problem_of(client.get(USERS, headers=limited), 403)


def test_create_read_list_update(client, admin):
    created = client.post(USERS, json={"email": "New@Example.com", "name": "New"}, headers=admin)
    assert created.status_code == 201
    user = created.get_json()
    assert user["email"] == "new@example.com" and user["is_admin"] is False
    assert client.get(f"{USERS}/{user['id']}", headers=admin).get_json() == user
    emails = [u["email"] for u in client.get(USERS, headers=admin).get_json()["users"]]
    assert emails == ["root@example.com", "new@example.com"]
    assert client.get(f"{USERS}?email=NEW@example.com", headers=admin).get_json()["users"][0]["id"] == user["id"]
    updated = client.patch(f"{USERS}/{user['id']}", json={"name": "Renamed", "is_admin": True}, headers=admin)
    assert updated.status_code == 200
    assert updated.get_json()["name"] == "Renamed" and updated.get_json()["is_admin"] is True


def test_create_with_password_lets_the_user_sign_in(client, admin):
    client.post(USERS, json={"email": "p@example.com", "password": "correct horse battery"}, headers=admin)
    login = client.post("/api/v0.2/auth/login", json={"email": "p@example.com", "password": "correct horse battery"})
    assert login.status_code == 200


@pytest.mark.parametrize(
    "payload, status",
    [({"email": "root@example.com"}, 409), ({"email": "nope"}, 422), ({}, 422),
     ({"email": "w@example.com", "password": "weak"}, 422), ({"email": "w@example.com", "is_admin": "yes please"}, 422)],
)
def test_bad_creations(client, admin, payload, status):
    problem_of(client.post(USERS, json=payload, headers=admin), status)


def test_deactivation_cuts_off_keys_and_sessions(client, admin, make):
    key = make.key("player@example.com")
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
    player_id = client.get("/api/v0.2/auth/me", headers={"X-API-Key": key}).get_json()["id"]
    response = client.patch(f"{USERS}/{player_id}", json={"is_active": False}, headers=admin)
    assert response.status_code == 200 and response.get_json()["is_active"] is False
    problem_of(client.get(MODELS, headers={"X-API-Key": key}), 401)
    client.patch(f"{USERS}/{player_id}", json={"is_active": True}, headers=admin)
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200


def test_delete_removes_the_user_and_their_keys(app, client, admin, make):
    key = make.key("player@example.com")
    player_id = client.get("/api/v0.2/auth/me", headers={"X-API-Key": key}).get_json()["id"]
    assert client.delete(f"{USERS}/{player_id}", headers=admin).status_code == 204
    problem_of(client.get(MODELS, headers={"X-API-Key": key}), 401)
    problem_of(client.get(f"{USERS}/{player_id}", headers=admin), 404)
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM api_keys")).scalar() == 1  # the admin's
    problem_of(client.delete(f"{USERS}/{player_id}", headers=admin), 404)


def test_admins_cannot_lock_themselves_out(client, admin):
    me = client.get("/api/v0.2/auth/me", headers=admin).get_json()["id"]
    problem_of(client.patch(f"{USERS}/{me}", json={"is_admin": False}, headers=admin), 409)
    problem_of(client.patch(f"{USERS}/{me}", json={"is_active": False}, headers=admin), 409)
    problem_of(client.delete(f"{USERS}/{me}", headers=admin), 409)


def test_demoted_admin_loses_admin_rights_at_once(client, admin, make):
    make.user("second@example.com", admin=True)
    second = {"X-API-Key": make.key("second@example.com", scopes=["admin"])}
    assert client.get(USERS, headers=second).status_code == 200
    second_id = client.get("/api/v0.2/auth/me", headers=second).get_json()["id"]
    client.patch(f"{USERS}/{second_id}", json={"is_admin": False}, headers=admin)
    problem_of(client.get(USERS, headers=second), 403)


def test_unknown_and_malformed_ids_are_404(client, admin):
    problem_of(client.get(f"{USERS}/{uuid.uuid4()}", headers=admin), 404)
    problem_of(client.get(f"{USERS}/123", headers=admin), 404)
    problem_of(client.patch(f"{USERS}/{uuid.uuid4()}", json={"name": "x"}, headers=admin), 404)


def test_malformed_update_is_422(client, admin, make):
    make.user("player@example.com")
    player_id = client.get(f"{USERS}?email=player@example.com", headers=admin).get_json()["users"][0]["id"]
    problem_of(client.patch(f"{USERS}/{player_id}", json={"is_active": "maybe"}, headers=admin), 422)
    problem_of(client.patch(f"{USERS}/{player_id}", json={"password": "short"}, headers=admin), 422)
    response = client.patch(f"{USERS}/{player_id}", data="{", content_type="application/json", headers=admin)
    problem_of(response, 400)
