"""Rate limits per key or user, shared through Redis, with both failure policies."""

import uuid

import pytest

from tests.conftest import make_app

MODELS = "/api/v0.2/models"


@pytest.fixture
def limited(database_url, tmp_path_factory, _session_app, redis_url):
    """Two apps (two processes' worth of state) sharing Redis, 5 requests a minute."""
    namespace_db = redis_url  # db 15 is the tests' own
    import redis

    redis.Redis.from_url(namespace_db).flushdb()

    def build(**overrides):
        settings = {"REDIS_URL": redis_url, "RATE_LIMIT_DEFAULT": "5/minute", "AUTH_RATE_LIMIT": "3/minute"}
        settings.update(overrides)
        return make_app(database_url, tmp_path_factory, **settings)

    return build


def test_limit_is_shared_across_processes_with_headers(limited, make):
    first, second = limited(), limited()
    key = {"X-API-Key": make.key()}
    statuses, remaining = [], []
    for app in (first, second, first, second, first):
        response = app.test_client().get(MODELS, headers=key)
        statuses.append(response.status_code)
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert response.headers["X-RateLimit-Limit"] == "5"
    assert statuses == [200] * 5
    assert remaining == [4, 3, 2, 1, 0]
    refused = second.test_client().get(MODELS, headers=key)
    assert refused.status_code == 429
    assert refused.content_type == "application/problem+json"
    # The real wait: this window is full, so the next request fits 12 s into the next one.
    assert 1 <= int(refused.headers["Retry-After"]) <= 72
    assert "5 per minute" in refused.get_json(force=True)["detail"]


def test_each_key_has_its_own_budget_and_overrides_apply(limited, make, app):
    from gaia_app.extensions import db
    from gaia_app.models import ApiKey

    server = limited()
    client = server.test_client()
    busy, quiet = make.key(name="busy"), make.key(name="quiet")
    with app.app_context():
        row = db.session.execute(db.select(ApiKey).where(ApiKey.name == "busy")).scalar_one()
        row.rate_limit = "2/minute"
        db.session.commit()
    assert [client.get(MODELS, headers={"X-API-Key": busy}).status_code for _ in range(3)] == [200, 200, 429]
    assert client.get(MODELS, headers={"X-API-Key": quiet}).headers["X-RateLimit-Limit"] == "5"


def test_spoofed_forwarded_for_does_not_escape_limits(limited, make):
    client = limited().test_client()
    key = make.key()
    codes = [
        client.get(MODELS, headers={"X-API-Key": key, "X-Forwarded-For": f"10.0.0.{i}"}).status_code
        for i in range(6)
    ]
    assert codes == [200] * 5 + [429]
    logins = [
        client.post(
            "/api/v0.2/auth/login",
            json={"email": f"{uuid.uuid4().hex}@example.com", "password": "whatever12345"},
            headers={"X-Forwarded-For": f"203.0.113.{i}"},
        ).status_code
        for i in range(4)
    ]
    assert logins == [401, 401, 401, 429]


def test_login_attempts_are_limited_per_account_too(limited, make):
    client = limited(AUTH_RATE_LIMIT="2/minute").test_client()
    body = {"email": "victim@example.com", "password": "guess guess guess"}
    codes = [client.post("/api/v0.2/auth/login", json=body, environ_base={"REMOTE_ADDR": f"198.51.100.{i}"}).status_code
             for i in range(3)]
    assert codes == [401, 401, 429]


def test_redis_outage_fails_open_by_default(database_url, tmp_path_factory, _session_app, make):
    app = make_app(database_url, tmp_path_factory, REDIS_URL="redis://127.0.0.1:1/0", RATE_LIMIT_DEFAULT="1/minute")
    client = app.test_client()
    key = make.key()
    responses = [client.get(MODELS, headers={"X-API-Key": key}) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "X-RateLimit-Limit" not in responses[0].headers


def test_redis_outage_can_fail_closed(database_url, tmp_path_factory, _session_app, make):
    app = make_app(
        database_url, tmp_path_factory, REDIS_URL="redis://127.0.0.1:1/0", RATE_LIMIT_ON_ERROR="closed"
    )
    response = app.test_client().get(MODELS, headers={"X-API-Key": make.key()})
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"]


def test_without_redis_limits_hold_per_process(database_url, tmp_path_factory, _session_app, make):
    client = make_app(database_url, tmp_path_factory, RATE_LIMIT_DEFAULT="2/minute").test_client()
    key = make.key()
    assert [client.get(MODELS, headers={"X-API-Key": key}).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize("where", ["process", "redis"])
def test_sliding_window_weighs_the_previous_window(monkeypatch, where, request):
    from gaia_app.runtime import ratelimit
    from gaia_app.runtime.ratelimit import LocalSlidingWindow, RedisSlidingWindow, parse_limit

    if where == "redis":
        window = RedisSlidingWindow(request.getfixturevalue("redis_url"), f"test:{uuid.uuid4().hex}")
    else:
        window = LocalSlidingWindow()
    clock = [1000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    item = parse_limit("4/minute")  # windows start at 960, 1020
    assert [window.hit(item, "k")[0] for _ in range(5)] == [True] * 4 + [False]
    clock[0] = 1025.0  # 5 s into the next window: 4 * 55/60 = 3.67 still count
    assert window.hit(item, "k")[0] is False
    clock[0] = 1050.0  # 30 s in: 4 * 0.5 = 2 count, so two more fit
    assert [window.hit(item, "k")[0] for _ in range(3)] == [True, True, False]
    assert window.hit(item, "other")[0] is True  # identities are counted apart
    clock[0] = 1200.0  # long idle: a fresh start
    allowed, remaining, reset_at, wait = window.hit(item, "k")
    assert allowed and remaining == 3 and reset_at == 1260.0 and wait == 0


@pytest.mark.parametrize("where", ["process", "redis"])
def test_the_wait_given_on_a_refusal_is_the_real_one(monkeypatch, where, request):
    """Retry-After once said 4 s, and the request sent then was told 60 s: the previous
    window's share fades on. Whoever waits what they were told gets through; a second
    earlier does not."""
    from gaia_app.runtime import ratelimit
    from gaia_app.runtime.ratelimit import LocalSlidingWindow, RedisSlidingWindow, parse_limit

    def fresh():
        if where == "redis":
            return RedisSlidingWindow(request.getfixturevalue("redis_url"), f"test:{uuid.uuid4().hex}")
        return LocalSlidingWindow()

    clock = [1000.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    item = parse_limit("10/minute")  # windows start at 960, 1020
    for refused_at in (1000.0, 1019.0, 1025.0):
        window = fresh()
        clock[0] = 1000.0
        assert all(window.hit(item, "k")[0] for _ in range(10))
        clock[0] = refused_at
        allowed, _remaining, _reset, wait = window.hit(item, "k")
        assert not allowed and wait > 0
        clock[0] = refused_at + wait - 1
        assert window.hit(item, "k")[0] is False, (refused_at, wait)
        clock[0] = refused_at + wait
        assert window.hit(item, "k")[0] is True, (refused_at, wait)


def test_retry_after_on_a_429_is_the_real_wait(database_url, tmp_path_factory, _session_app, make, monkeypatch):
    from gaia_app.runtime import ratelimit

    clock = [960.0 + 30]  # half way into a minute window
    monkeypatch.setattr(ratelimit.time, "time", lambda: clock[0])
    client = make_app(database_url, tmp_path_factory, RATE_LIMIT_DEFAULT="2/minute").test_client()
    key = {"X-API-Key": make.key()}
    assert [client.get(MODELS, headers=key).status_code for _ in range(2)] == [200, 200]
    refused = client.get(MODELS, headers=key)
    assert refused.status_code == 429
    # 2 this window: the next fits once one of them has faded to half, 30 s into the next.
    assert refused.headers["Retry-After"] == "60"
    clock[0] += 59
    assert client.get(MODELS, headers=key).status_code == 429
    clock[0] += 1
    assert client.get(MODELS, headers=key).status_code == 200


def test_busy_keys_are_counted_in_batches_across_processes(redis_url):
    """Limits of 100 or more per window are reported in batches; the limit still holds."""
    from gaia_app.runtime.ratelimit import RedisSlidingWindow, parse_limit

    prefix = f"test:{uuid.uuid4().hex}"
    first, second = RedisSlidingWindow(redis_url, prefix), RedisSlidingWindow(redis_url, prefix)
    item = parse_limit("3000/minute")
    calls = []
    original = first.script

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    first.script = counting
    allowed = sum(
        (first if i % 2 else second).hit(item, "key")[0] for i in range(3200)
    )
    # Each process may let through up to 1% of the limit unseen by the other.
    assert 3000 <= allowed <= 3000 + 2 * 30
    assert len(calls) < 1600 / 5  # far fewer round trips than requests
    assert first.hit(item, "key")[0] is False and second.hit(item, "key")[0] is False


def test_slow_limits_are_checked_exactly(redis_url):
    from gaia_app.runtime.ratelimit import RedisSlidingWindow, parse_limit

    prefix = f"test:{uuid.uuid4().hex}"
    first, second = RedisSlidingWindow(redis_url, prefix), RedisSlidingWindow(redis_url, prefix)
    item = parse_limit("10/minute")
    results = [(first if i % 2 else second).hit(item, "key")[0] for i in range(12)]
    assert results == [True] * 10 + [False] * 2
