"""/health tells the truth about the database, the migrations and the broker."""

import pytest
from sqlalchemy import text

from gaia_app.extensions import db
from tests.conftest import make_app, upgrade


def test_healthy_with_a_current_schema(client, backend):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "healthy"
    assert body["service"] == "all"
    assert body["services"] == ["gateway", "auth", "chat", "asset"]
    assert body["environment"] == "local"
    assert body["database"]["status"] == "connected"
    assert body["database"]["latency_ms"] >= 0
    migrations = body["database"]["migrations"]
    assert migrations["status"] == "current" and migrations["current"] == migrations["head"]
    assert body["broker"]["status"] == "embedded"
    assert body["version_skew"] == []
    assert {check["name"] for check in body["checks"]} >= {"database", "migrations", "broker"}


def test_liveness_touches_nothing(tmp_path_factory):
    app = make_app("postgres://postgres@127.0.0.1:1/nothing", tmp_path_factory)
    assert app.test_client().get("/health/live").status_code == 200


def test_unreachable_database_is_503_with_the_reason(tmp_path_factory):
    app = make_app("postgres://postgres@127.0.0.1:1/nothing", tmp_path_factory)
    response = app.test_client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy"
    assert body["database"]["status"] == "disconnected"
    assert "refused" in body["database"]["error"].lower() or "connect" in body["database"]["error"].lower()


def test_unreachable_database_makes_api_calls_503_not_500(tmp_path_factory):
    from gaia_app.identity.apikeys import generate_api_key

    app = make_app("postgres://postgres@127.0.0.1:1/nothing", tmp_path_factory)
    response = app.test_client().get(
        "/api/v0.2/models", headers={"X-API-Key": generate_api_key("local")}
    )
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"]


@pytest.fixture
def fresh_database(backend, tmp_path_factory, request):
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('fresh') / 'fresh.db'}"
    return request.getfixturevalue("postgres").create()


def test_missing_schema_is_degraded_and_says_what_to_run(fresh_database, tmp_path_factory):
    app = make_app(fresh_database, tmp_path_factory)
    client = app.test_client()
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["database"]["status"] == "connected"
    assert body["database"]["migrations"]["status"] == "uninitialized"
    detail = next(c["detail"] for c in body["checks"] if c["name"] == "migrations")
    assert "flask --app wsgi db upgrade" in detail
    # Which database it is: the seed's services connected to one `fly postgres attach` made.
    name = fresh_database.rsplit("/", 1)[-1]
    assert body["database"]["name"] == name and f"`{name}`" in detail
    assert "127.0.0.1" not in str(body) and "postgres@" not in str(body)

    # The seed's "relation api_keys does not exist" becomes a clear 503.
    from gaia_app.identity.apikeys import generate_api_key

    api = client.get("/api/v0.2/models", headers={"X-API-Key": generate_api_key("local")})
    assert api.status_code == 503
    assert "db upgrade" in api.get_json(force=True)["detail"]


def test_schema_behind_head_is_degraded(fresh_database, tmp_path_factory):
    from flask_migrate import downgrade

    app = make_app(fresh_database, tmp_path_factory)
    upgrade(app)
    with app.app_context():
        downgrade(revision="base")
    body = app.test_client().get("/health").get_json()
    assert body["status"] == "degraded"
    assert body["database"]["migrations"]["status"] == "behind"


def test_schema_from_a_newer_build_is_reported(fresh_database, tmp_path_factory):
    app = make_app(fresh_database, tmp_path_factory)
    upgrade(app)
    with app.app_context():
        db.session.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))
        db.session.commit()
    body = app.test_client().get("/health").get_json()
    assert body["status"] == "degraded"
    assert body["database"]["migrations"]["status"] == "ahead"


def test_broker_is_checked_for_real(database_url, tmp_path_factory, redis_url, _session_app):
    app = make_app(database_url, tmp_path_factory, REDIS_URL=redis_url)
    body = app.test_client().get("/health").get_json()
    assert body["broker"]["status"] == "connected"
    assert body["status"] == "healthy"

    down = make_app(database_url, tmp_path_factory, REDIS_URL="redis://127.0.0.1:1/0")
    body = down.test_client().get("/health").get_json()
    assert body["broker"]["status"] == "disconnected"
    assert body["status"] == "degraded"
