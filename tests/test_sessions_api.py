"""Register, login, refresh (rotation and reuse detection), logout, me."""

import pytest
from sqlalchemy import text

from gaia_app.extensions import db
from tests.conftest import problem_of

AUTH = "/api/v0.2/auth"
PASSWORD = "correct horse battery"


def register(client, email="player@example.com", password=PASSWORD, **extra):
    return client.post(f"{AUTH}/register", json={"email": email, "password": password, **extra})


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_register_then_me(client):
    response = register(client, "New.Player@Example.com", name="Nova")
    assert response.status_code == 201
    body = response.get_json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    assert body["user"]["email"] == "new.player@example.com"
    assert "password" not in str(body["user"]) and "hash" not in str(body)
    me = client.get(f"{AUTH}/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["auth_type"] == "jwt"
    assert me.get_json()["name"] == "Nova"
    assert set(me.get_json()["scopes"]) == {"chat", "assets"}


def test_password_is_stored_as_a_slow_salted_hash(app, client):
    register(client, "a@example.com")
    register(client, "b@example.com")
    with app.app_context():
        hashes = [row[0] for row in db.session.execute(text("SELECT password_hash FROM users ORDER BY email"))]
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert hashes[0] != hashes[1] and PASSWORD not in "".join(hashes)


def test_duplicate_email_is_409(client):
    register(client)
    body = problem_of(register(client, "PLAYER@example.com"), 409)
    assert "already exists" in body["detail"]


@pytest.mark.parametrize(
    "password, reason",
    [("short", "at least"), ("password123", "common"), ("aaaaaaaaaaaa", "simple"),
     ("player-secret-99", "email")],
)
def test_weak_passwords_are_refused(client, password, reason):
    body = problem_of(register(client, password=password), 422)
    assert reason in body["detail"]
    assert body["errors"][0]["field"] == "password"


def test_enormous_password_is_refused_before_hashing(client):
    body = problem_of(register(client, password="x" * 10_000), 422)
    assert body["errors"][0]["field"] == "password"


@pytest.mark.parametrize(
    "payload",
    [{"email": "player@example.com"}, {"password": PASSWORD}, {"email": 5, "password": PASSWORD},
     {"email": "not-an-email", "password": PASSWORD}, [1, 2]],
)
def test_malformed_registrations_are_422(client, payload):
    problem_of(client.post(f"{AUTH}/register", json=payload), 422)


def test_malformed_json_is_400(client):
    response = client.post(f"{AUTH}/login", data="{", content_type="application/json")
    problem_of(response, 400)


def test_login_right_and_wrong(client):
    register(client)
    ok = client.post(f"{AUTH}/login", json={"email": "Player@example.com", "password": PASSWORD})
    assert ok.status_code == 200 and ok.get_json()["access_token"]
    wrong = problem_of(client.post(f"{AUTH}/login", json={"email": "player@example.com", "password": "nope nope nope"}), 401)
    nobody = problem_of(client.post(f"{AUTH}/login", json={"email": "ghost@example.com", "password": PASSWORD}), 401)
    assert wrong["detail"] == nobody["detail"]  # no hint whether the account exists


def test_deactivated_user_cannot_log_in(app, client):
    register(client)
    with app.app_context():
        db.session.execute(text("UPDATE users SET is_active = :no"), {"no": False})
        db.session.commit()
    body = problem_of(client.post(f"{AUTH}/login", json={"email": "player@example.com", "password": PASSWORD}), 401)
    assert "deactivated" in body["detail"]


def test_refresh_rotates_and_reuse_revokes_the_family(client):
    first = register(client).get_json()
    second = client.post(f"{AUTH}/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = second.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    # The first token comes back (stolen copy): refused, and the whole family dies with it.
    body = problem_of(client.post(f"{AUTH}/refresh", json={"refresh_token": first["refresh_token"]}), 401)
    assert "already used" in body["detail"]
    problem_of(client.post(f"{AUTH}/refresh", json={"refresh_token": second["refresh_token"]}), 401)


def test_refresh_tokens_are_stored_hashed(app, client):
    tokens = register(client).get_json()
    with app.app_context():
        stored = db.session.execute(text("SELECT token_hash FROM refresh_tokens")).scalars().all()
    assert len(stored) == 1 and tokens["refresh_token"] not in stored[0]


def test_logout_ends_the_session(client):
    tokens = register(client).get_json()
    assert client.post(f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 204
    body = problem_of(client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}), 401)
    assert "revoked" in body["detail"]
    # Logging out twice, or with a token we never issued, is harmless.
    assert client.post(f"{AUTH}/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 204
    assert client.post(f"{AUTH}/logout", json={"refresh_token": "grt_nothing"}).status_code == 204


@pytest.mark.parametrize("token", ["", "grt_unknown", "x" * 500, "gaia_local_abc"])
def test_bad_refresh_tokens(client, token):
    response = client.post(f"{AUTH}/refresh", json={"refresh_token": token})
    assert response.status_code in (401, 422)
    assert response.content_type == "application/problem+json"


def test_me_with_an_api_key_and_without_credentials(client, make):
    key = make.key()
    body = client.get(f"{AUTH}/me", headers={"X-API-Key": key}).get_json()
    assert body["auth_type"] == "api_key" and body["key_id"]
    problem_of(client.get(f"{AUTH}/me"), 401)


def test_validate_endpoint(client, make):
    key = make.key()
    good = client.post(f"{AUTH}/validate", json={"api_key": key}).get_json()
    assert good["valid"] is True and good["auth_type"] == "api_key" and good["user_id"]
    altered = key[:-1] + ("Q" if key[-1] != "Q" else "R")  # never the key itself
    bad = client.post(f"{AUTH}/validate", json={"api_key": altered}).get_json()
    assert bad["valid"] is False and bad["reason"]
    token = register(client, "v@example.com").get_json()["access_token"]
    jwt_result = client.post(f"{AUTH}/validate", json={"token": token}).get_json()
    assert jwt_result["valid"] is True and jwt_result["auth_type"] == "jwt"
    problem_of(client.post(f"{AUTH}/validate", json={}), 422)
    problem_of(client.post(f"{AUTH}/validate", json={"token": token, "api_key": key}), 422)


# -- ending every session ----------------------------------------------------------------


def _sessions_of(client, email="player@example.com"):
    register(client, email)
    first = client.post(f"{AUTH}/login", json={"email": email, "password": PASSWORD}).get_json()
    second = client.post(f"{AUTH}/login", json={"email": email, "password": PASSWORD}).get_json()
    return first, second


def _refreshes(client, tokens) -> int:
    return client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code


@pytest.fixture
def admin_key(make):
    make.user("root@example.com", admin=True)
    return {"X-API-Key": make.key("root@example.com", scopes=["admin"])}


def test_a_password_reset_ends_every_session(client, admin_key):
    first, second = _sessions_of(client)
    user_id = client.get(f"{AUTH}/me", headers=bearer(first["access_token"])).get_json()["id"]
    reset = client.patch(f"/api/v0.2/users/{user_id}", json={"password": "a brand new secret"}, headers=admin_key)
    assert reset.status_code == 200
    assert _refreshes(client, first) == 401 and _refreshes(client, second) == 401
    # The new password signs in again, with a session that works.
    fresh = client.post(f"{AUTH}/login", json={"email": "player@example.com", "password": "a brand new secret"})
    assert fresh.status_code == 200 and _refreshes(client, fresh.get_json()) == 200


def test_deactivation_ends_every_session_even_after_reactivation(client, admin_key):
    first, _ = _sessions_of(client)
    user_id = client.get(f"{AUTH}/me", headers=bearer(first["access_token"])).get_json()["id"]
    for active in (False, True):
        assert client.patch(f"/api/v0.2/users/{user_id}", json={"is_active": active}, headers=admin_key).status_code == 200
    assert _refreshes(client, first) == 401


def test_logout_everywhere_ends_the_other_sessions_too(client):
    first, second = _sessions_of(client)
    other_first, other_second = _sessions_of(client, "someone@example.com")
    assert client.post(f"{AUTH}/logout", json={"refresh_token": first["refresh_token"], "everywhere": True}).status_code == 204
    assert _refreshes(client, first) == 401 and _refreshes(client, second) == 401
    assert _refreshes(client, other_first) == 200  # nobody else's


def test_plain_logout_ends_only_its_own_session(client):
    first, second = _sessions_of(client)
    assert client.post(f"{AUTH}/logout", json={"refresh_token": first["refresh_token"]}).status_code == 204
    assert _refreshes(client, first) == 401 and _refreshes(client, second) == 200


def test_logout_everywhere_must_be_a_boolean(client):
    first, _ = _sessions_of(client)
    body = problem_of(client.post(f"{AUTH}/logout", json={"refresh_token": first["refresh_token"], "everywhere": "yes please"}), 422)
    assert body["errors"][0]["field"] == "everywhere"
