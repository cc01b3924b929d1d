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


def _operations(spec):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, method, operation


def test_every_operation_has_a_stable_unique_operation_id(client):
    spec = client.get("/api/v0.2/openapi.json").get_json()
    ids = [operation.get("operationId") for _, _, operation in _operations(spec)]
    assert all(ids) and len(ids) == len(set(ids))
    by_path = {(path, method): op["operationId"] for path, method, op in _operations(spec)}
    assert by_path[("/api/v0.2/auth/login", "post")] == "auth.login"
    assert by_path[("/v1/chat/completions", "post")] == "openai.chat_completions"


def test_error_answers_are_documented_as_they_are_served(client):
    """problem+json with the Problem schema; under /v1, OpenAI's error object."""
    spec = client.get("/api/v0.2/openapi.json").get_json()
    assert "OpenAIError" in spec["components"]["schemas"]
    for path, method, operation in _operations(spec):
        openai = path.startswith("/v1")
        errors = {s: r for s, r in operation["responses"].items() if s == "default" or s[0] in "45"}
        assert "default" in errors, (path, method)
        for status, response in errors.items():
            if openai:
                assert response["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/OpenAIError"}}}, (path, status)
            else:
                assert response["content"] == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}, (path, status)
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= set(operation["responses"]) or openai, (path, method)


def test_a_documented_error_matches_the_served_one(client):
    spec = client.get("/api/v0.2/openapi.json").get_json()
    documented = spec["paths"]["/api/v0.2/auth/login"]["post"]["responses"]["422"]["content"]
    served = client.post("/api/v0.2/auth/login", json={})
    assert served.status_code == 422 and served.content_type in documented
    served_v1 = client.post("/v1/chat/completions", json={})
    assert served_v1.status_code == 401 and served_v1.content_type in \
        spec["paths"]["/v1/chat/completions"]["post"]["responses"]["401"]["content"]
