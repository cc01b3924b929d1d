"""The auth service end to end: gunicorn with three workers on PostgreSQL and Redis."""

from __future__ import annotations

import time

import pytest
import requests

from tests.test_e2e_gunicorn import NO_PROXY, deployed, problem

API = "/api/v0.2"


@pytest.fixture(scope="module")
def service(redis_url, tmp_path_factory, request):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    database_url = request.getfixturevalue("postgres").create()
    with deployed(tmp_path_factory.mktemp("auth-e2e"), database_url, REDIS_URL=redis_url,
                  workers=3, AUTH_RATE_LIMIT="1000/minute") as deployment:
        yield deployment


def call(service, method, path, *, token=None, key=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["X-API-Key"] = key
    # A new connection each time, so the workers share the work.
    return requests.request(method, service.server.url + API + path, headers=headers,
                            timeout=10, proxies=NO_PROXY, **kwargs)


def test_a_player_signs_up_makes_a_key_rotates_and_revokes_it(service):
    signed_up = call(service, "POST", "/auth/register",
                     json={"email": "player@example.com", "password": "correct horse battery"})
    assert signed_up.status_code == 201, signed_up.text
    tokens = signed_up.json()
    me = call(service, "GET", "/auth/me", token=tokens["access_token"])
    assert me.status_code == 200 and me.json()["auth_type"] == "jwt"

    created = call(service, "POST", "/keys", token=tokens["access_token"], json={"name": "unity", "expires_at": None})
    assert created.status_code == 201
    key = created.json()
    for _ in range(6):
        assert call(service, "GET", "/models", key=key["key"]).status_code == 200

    rotated = call(service, "POST", f"/keys/{key['id']}/rotate", token=tokens["access_token"],
                   json={"grace_seconds": 1}).json()
    assert call(service, "GET", "/models", key=key["key"]).status_code == 200
    time.sleep(1.2)
    for _ in range(6):
        problem(call(service, "GET", "/models", key=key["key"]), 401)
        assert call(service, "GET", "/models", key=rotated["key"]).status_code == 200

    assert call(service, "DELETE", f"/keys/{rotated['id']}", token=tokens["access_token"]).status_code == 204
    for _ in range(6):
        problem(call(service, "GET", "/models", key=rotated["key"]), 401)


def test_refresh_rotation_and_reuse_over_http(service):
    call(service, "POST", "/auth/register", json={"email": "r@example.com", "password": "correct horse battery"})
    login = call(service, "POST", "/auth/login", json={"email": "r@example.com", "password": "correct horse battery"})
    first = login.json()["refresh_token"]
    second = call(service, "POST", "/auth/refresh", json={"refresh_token": first})
    assert second.status_code == 200
    problem(call(service, "POST", "/auth/refresh", json={"refresh_token": first}), 401)
    problem(call(service, "POST", "/auth/refresh", json={"refresh_token": second.json()["refresh_token"]}), 401)


def test_deactivation_by_an_admin_reaches_every_worker(service):
    call(service, "POST", "/auth/register", json={"email": "d@example.com", "password": "correct horse battery"})
    token = call(service, "POST", "/auth/login",
                 json={"email": "d@example.com", "password": "correct horse battery"}).json()["access_token"]
    for _ in range(6):  # cached in every worker for 60 s from here on
        assert call(service, "GET", "/auth/me", token=token).status_code == 200
    user_id = call(service, "GET", "/auth/me", token=token).json()["id"]
    response = call(service, "PATCH", f"/users/{user_id}", key=service.admin_key, json={"is_active": False})
    assert response.status_code == 200
    deadline = time.monotonic() + 1.0
    statuses = []
    while time.monotonic() < deadline:
        statuses = [call(service, "GET", "/auth/me", token=token).status_code for _ in range(6)]
        if statuses == [401] * 6:
            break
    assert statuses == [401] * 6, "a worker still accepted the deactivated user's token after 1 s"


def test_rate_limit_is_shared_by_all_workers(service):
    created = call(service, "POST", "/keys", key=service.admin_key,
                   json={"name": "limited", "expires_at": None, "rate_limit": "8/minute"}).json()
    statuses = [call(service, "GET", "/models", key=created["key"]).status_code for _ in range(10)]
    assert statuses == [200] * 8 + [429] * 2
    refused = call(service, "GET", "/models", key=created["key"])
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Remaining"] == "0"
