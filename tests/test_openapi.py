"""The OpenAPI document is generated from the validating schemas and served with a docs page."""


def test_openapi_document_lists_the_api(client):
    response = client.get("/api/v0.2/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "Gaia"
    for path in ("/health", "/api/v0.2/providers", "/api/v0.2/models", "/api/v0.2/models/{model_id}"):
        assert path in spec["paths"], path
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert "Problem" in spec["components"]["schemas"]


def test_protected_operations_declare_security_and_401(client):
    spec = client.get("/api/v0.2/openapi.json").get_json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/v0.2/") and method == "get":
                assert operation.get("security"), (path, method)
                assert "401" in operation["responses"], (path, method)
    assert "security" not in spec["paths"]["/health"]["get"]


def test_query_schema_is_in_the_document(client):
    spec = client.get("/api/v0.2/openapi.json").get_json()
    params = {p["name"] for p in spec["paths"]["/api/v0.2/models"]["get"]["parameters"]}
    assert params >= {"provider", "capability"}


def test_docs_page_is_served_offline(client):
    page = client.get("/docs/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/api/v0.2/openapi.json" in html
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs").status_code in (200, 301, 308)


def test_auth_service_is_documented(client):
    spec = client.get("/api/v0.2/openapi.json").get_json()
    for path in ("/api/v0.2/auth/login", "/api/v0.2/auth/register", "/api/v0.2/auth/refresh",
                 "/api/v0.2/auth/logout", "/api/v0.2/auth/validate", "/api/v0.2/auth/me",
                 "/api/v0.2/keys", "/api/v0.2/keys/{key_id}", "/api/v0.2/keys/{key_id}/rotate",
                 "/api/v0.2/users", "/api/v0.2/users/{user_id}"):
        assert path in spec["paths"], path
    login = spec["paths"]["/api/v0.2/auth/login"]["post"]
    assert "requestBody" in login and "security" not in login
    assert "403" in spec["paths"]["/api/v0.2/users"]["get"]["responses"]
