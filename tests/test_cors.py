"""CORS follows ALLOWED_ORIGINS, and only those origins."""

from tests.conftest import make_app


def test_allowed_origin_gets_cors_headers(database_url, tmp_path_factory, _session_app):
    app = make_app(database_url, tmp_path_factory, ALLOWED_ORIGINS="https://play.example.com, https://admin.example.com")
    client = app.test_client()
    preflight = client.options(
        "/api/v0.2/models",
        headers={
            "Origin": "https://play.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-API-Key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://play.example.com"
    assert "x-api-key" in preflight.headers["Access-Control-Allow-Headers"].lower()
    response = client.get("/health/live", headers={"Origin": "https://admin.example.com"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://admin.example.com"
    assert "X-RateLimit-Remaining" in response.headers["Access-Control-Expose-Headers"]


def test_other_origins_get_nothing(database_url, tmp_path_factory, _session_app):
    app = make_app(database_url, tmp_path_factory, ALLOWED_ORIGINS="https://play.example.com")
    response = app.test_client().get("/health/live", headers={"Origin": "https://evil.example.net"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_no_cors_without_allowed_origins(client):
    response = client.get("/health/live", headers={"Origin": "https://play.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers
