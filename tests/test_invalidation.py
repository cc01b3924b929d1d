"""Credential changes reach every process's cache through Redis within a second."""

import time

import pytest
from gaia_app.state import gaia

from tests.conftest import make_app

MODELS = "/api/v0.2/models"


def wait_until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.02)
    return None


@pytest.fixture
def two_processes(database_url, tmp_path_factory, _session_app, redis_url):
    """Two apps with their own caches and listeners, caching for 60 s, sharing Redis."""
    apps = [make_app(database_url, tmp_path_factory, REDIS_URL=redis_url) for _ in range(2)]
    for app in apps:
        assert gaia(app).settings.auth_cache_ttl == 60.0
    return apps


def listening(app):
    bus = gaia(app).bus
    bus.ensure_listening()
    return wait_until(lambda: bus.connected) is not None


def test_revocation_reaches_the_other_process_within_a_second(two_processes, make):
    left, right = two_processes
    key = make.key()
    headers = {"X-API-Key": key}
    assert right.test_client().get(MODELS, headers=headers).status_code == 200  # cached in right
    assert listening(left) and listening(right)

    from gaia_app import accounts
    from gaia_app.extensions import db

    with left.app_context():
        row = accounts.list_api_keys()[0]
        accounts.revoke_api_key(row)
        db.session.commit()
        revoked_at = time.monotonic()
    client = right.test_client()
    refused_at = wait_until(lambda: client.get(MODELS, headers=headers).status_code == 401)
    assert refused_at is not None, "the other process still accepts the revoked key"
    assert refused_at - revoked_at < 1.0


def test_deactivation_and_cli_revocation_propagate(two_processes, make):
    left, right = two_processes
    key = make.key("player@example.com")
    other = make.key("player@example.com", name="second")
    client = right.test_client()
    assert client.get(MODELS, headers={"X-API-Key": key}).status_code == 200
    assert listening(right)
    result = left.test_cli_runner().invoke(args=["users", "deactivate", "--email", "player@example.com"])
    assert result.exit_code == 0, result.output
    assert wait_until(lambda: client.get(MODELS, headers={"X-API-Key": key}).status_code == 401, 1.0)
    assert client.get(MODELS, headers={"X-API-Key": other}).status_code == 401


def test_without_the_channel_entries_live_one_second_at_most(database_url, tmp_path_factory, _session_app):
    app = make_app(database_url, tmp_path_factory, REDIS_URL="redis://127.0.0.1:1/0")
    bus = gaia(app).bus
    bus.ensure_listening()
    time.sleep(0.2)
    assert bus.connected is False
    assert bus.ttl(60.0) == 1.0


def test_without_redis_the_ttl_is_one_second(database_url, tmp_path_factory, _session_app):
    app = make_app(database_url, tmp_path_factory)
    settings = gaia(app).settings
    assert settings.auth_cache_ttl == 1.0
    assert gaia(app).bus.ttl(settings.auth_cache_ttl) == 1.0
