"""What the provider registry offers, shaped for the API; 404s name what exists."""

from __future__ import annotations

from flask import Response, json

from blueprints.chat.routing import find_model, provider_or_404
from blueprints.chat.routing import registry as _registry
from gaia_app.errors import UnknownModel
from gaia_app.providers import embeddings
from gaia_app.state import gaia

_LISTING_CACHE_SIZE = 64


def provider_summaries() -> list[dict]:
    summaries = []
    for provider in _registry().providers():
        summaries.append({
            "id": provider.id,
            "name": provider.name,
            "status": provider.health().status,
            "models": [model.id for model in provider.list_models()],
            "capabilities": list(provider.capabilities),
        })
    return summaries


def provider_detail(provider_id: str) -> dict:
    provider = provider_or_404(provider_id)
    return {
        "id": provider.id,
        "name": provider.name,
        "status": provider.health().status,
        "models": [model.to_dict() for model in provider.list_models()],
        "capabilities": list(provider.capabilities),
    }


def provider_models(provider_id: str) -> list[dict]:
    return [model.to_dict() for model in provider_or_404(provider_id).list_models()]


def provider_health(provider_id: str) -> dict:
    provider = provider_or_404(provider_id)
    health = provider.health()
    return {
        "id": provider.id,
        "status": health.status,
        "latency_ms": health.latency_ms,
        "detail": health.detail,
    }


def models(provider: str | None = None, capability: str | None = None) -> list[dict]:
    """The chat models, then the embedding models each provider is known to have
    (`gaia-local-embed`, OpenAI's), filtered by provider and capability."""
    if provider is not None:
        provider_or_404(provider)
    registry = _registry()
    found = registry.models(provider=provider, capability=capability)
    listed = {(model.provider, model.id) for model in found}
    for each in [registry.get(provider)] if provider is not None else registry.providers():
        for model in embeddings.embedding_models(each):
            if (model.provider, model.id) not in listed and (capability is None or capability in model.capabilities):
                listed.add((model.provider, model.id))
                found.append(model)
    return [model.to_dict() for model in found]


def models_listing(schema, provider: str | None = None, capability: str | None = None) -> Response:
    """`GET /models` as a ready response: clients poll it, and it only changes with the registry.

    The body is made by `schema` once per registry version and filter, then served as is.
    """
    registry = _registry()
    for each in registry.providers():
        # Cheap when fresh; past its TTL a provider's list is refreshed in the background,
        # and a changed list bumps the registry version (so this cache expires).
        each.list_models()
    cache = gaia().listing_cache
    key = ("models", registry.version, provider, capability)
    body = cache.get(key)
    if body is None:
        found = models(provider=provider, capability=capability)
        body = json.dumps(schema.dump({"models": found, "total": len(found)}), separators=(",", ":"))
        if len(cache) >= _LISTING_CACHE_SIZE:
            cache.clear()
        cache[key] = body
    return Response(body, mimetype="application/json")


def model(model_id: str) -> dict:
    registry = _registry()
    found = find_model(model_id) or embeddings.find_embedding_model(registry, model_id)
    if found is None:
        available = [m.id for m in registry.models()]
        raise UnknownModel(
            f"Unknown model '{model_id}'. Available models: {', '.join(available) or 'none'}.",
            available=available,
        )
    return found.to_dict()
