"""Providers and models: the registry through the API, credentials required."""

import pytest
from gaia_app.providers.embeddings import LOCAL_MODEL
from gaia_app.state import gaia

from tests.conftest import make_app


@pytest.fixture
def auth(make):
    return {"X-API-Key": make.key()}


def test_providers_list_the_local_provider(client, auth):
    response = client.get("/api/v0.2/providers", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["total_providers"] == len(body["providers"]) == 1
    local = body["providers"][0]
    assert local["id"] == "local" and local["status"] == "available"
    assert "gaia-local" in local["models"]
    assert "chat" in local["capabilities"]


def test_provider_detail_models_and_health(client, auth):
    detail = client.get("/api/v0.2/providers/local", headers=auth).get_json()
    assert detail["models"][0]["id"] == "gaia-local"
    assert detail["models"][0]["context_window"] > 0
    models = client.get("/api/v0.2/providers/local/models", headers=auth).get_json()
    assert models["total"] == len(models["models"]) >= 1
    health = client.get("/api/v0.2/providers/local/health", headers=auth).get_json()
    assert health["status"] == "available"


@pytest.mark.parametrize("path", ["", "/models", "/health"])
def test_unknown_provider_is_404_naming_the_configured_ones(client, auth, path):
    response = client.get(f"/api/v0.2/providers/openai{path}", headers=auth)
    assert response.status_code == 404
    body = response.get_json(force=True)
    assert "local" in body["detail"] and body["available"] == ["local"]


def test_models_with_filters(client, auth):
    body = client.get("/api/v0.2/models", headers=auth).get_json()
    assert body["total"] == len(body["models"]) >= 2
    model = body["models"][0]
    assert set(model) >= {"id", "name", "provider", "capabilities", "context_window", "max_tokens"}
    assert client.get("/api/v0.2/models?provider=local", headers=auth).get_json()["total"] == body["total"]
    assert client.get("/api/v0.2/models?capability=streaming", headers=auth).get_json()["total"] >= 1
    assert client.get("/api/v0.2/models?capability=vision", headers=auth).get_json()["total"] == 0
    assert client.get("/api/v0.2/models?provider=nope", headers=auth).status_code == 404
    bad = client.get("/api/v0.2/models?capability=telepathy", headers=auth)
    assert bad.status_code == 422 and bad.get_json(force=True)["errors"][0]["field"] == "capability"


def test_model_by_id_and_by_provider_slash_id(client, auth):
    assert client.get("/api/v0.2/models/gaia-local", headers=auth).get_json()["provider"] == "local"
    assert client.get("/api/v0.2/models/local/gaia-local", headers=auth).get_json()["id"] == "gaia-local"
    missing = client.get("/api/v0.2/models/gpt-9", headers=auth)
    assert missing.status_code == 404
    assert "gaia-local" in missing.get_json(force=True)["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v0.2/providers",
        "/api/v0.2/providers/local",
        "/api/v0.2/providers/local/models",
        "/api/v0.2/providers/local/health",
        "/api/v0.2/models",
        "/api/v0.2/models/gaia-local",
    ],
)
def test_every_catalog_route_needs_credentials(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.content_type == "application/problem+json"


def test_local_provider_can_be_disabled(tmp_path_factory, database_url, _session_app, make):
    app = make_app(database_url, tmp_path_factory, GAIA_DISABLE_LOCAL_PROVIDER="1")
    key = make.key()
    body = app.test_client().get("/api/v0.2/providers", headers={"X-API-Key": key}).get_json()
    assert body == {"providers": [], "total_providers": 0}


def test_local_provider_is_deterministic_counts_tokens_and_streams():
    from gaia_app.providers.base import ChatMessage, ChatRequest, ProviderDeclaration
    from gaia_app.providers.local import LocalProvider

    provider = LocalProvider(ProviderDeclaration(id="local", kind="local", name="Gaia local"))
    request = ChatRequest(model="gaia-local", messages=(ChatMessage("user", "Hello there, Mu!"),))
    first, second = provider.complete(request), provider.complete(request)
    assert first == second and first.text
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    chunks = list(provider.stream(request))
    assert "".join(chunk.text for chunk in chunks) == first.text
    assert chunks[-1].usage == first.usage and chunks[-1].finish_reason == first.finish_reason
    other = provider.complete(ChatRequest(model="gaia-local", messages=(ChatMessage("user", "Bye"),)))
    assert other.text != first.text or other.usage != first.usage
    short = provider.complete(ChatRequest(model="gaia-local", messages=request.messages, max_tokens=3))
    assert short.usage.completion_tokens <= 3 and short.finish_reason == "length"


def test_model_listing_is_served_from_cache_until_the_registry_changes(app, client, auth):
    from blueprints.chat.schemas import ModelListSchema
    from gaia_app.providers.base import ModelInfo

    registry = gaia(app).providers
    first = client.get("/api/v0.2/models", headers=auth).get_json()
    with app.app_context():
        # The chat models, then the embedding model of `local`.
        listed = [m.to_dict() for m in registry.models()] + [{**LOCAL_MODEL.to_dict(), "provider": "local"}]
        fresh = ModelListSchema().dump({"models": listed, "total": 3})
    assert first == fresh

    local = registry.get("local")
    extra = ModelInfo(id="gaia-local-xl", name="XL", provider="local", capabilities=("chat",))
    original = local.list_models
    local.list_models = lambda: original() + [extra]
    try:
        assert client.get("/api/v0.2/models", headers=auth).get_json() == first  # still cached
        registry.version += 1
        changed = client.get("/api/v0.2/models", headers=auth).get_json()
        assert changed["total"] == first["total"] + 1
        assert [m["id"] for m in changed["models"]][-2:] == ["gaia-local-xl", "gaia-local-embed"]
    finally:
        local.list_models = original
        registry.version += 1
