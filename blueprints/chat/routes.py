"""Routes of the chat service."""

from flask_smorest import Blueprint

from blueprints.chat import catalog
from blueprints.chat.schemas import (
    ModelListSchema,
    ModelQuerySchema,
    ModelSchema,
    ProviderDetailSchema,
    ProviderHealthSchema,
    ProviderListSchema,
)
from gaia_app import API_PREFIX
from gaia_app.security import require_auth

MODEL_LIST = ModelListSchema()

blp = Blueprint("chat", __name__, url_prefix=API_PREFIX, description="LLM providers and models")


@blp.route("/providers")
@require_auth
@blp.response(200, ProviderListSchema)
def list_providers():
    """The LLM providers this deployment has configured."""
    providers = catalog.provider_summaries()
    return {"providers": providers, "total_providers": len(providers)}


@blp.route("/providers/<provider_id>")
@require_auth
@blp.response(200, ProviderDetailSchema)
def get_provider(provider_id: str):
    """One provider, with its models in full."""
    return catalog.provider_detail(provider_id)


@blp.route("/providers/<provider_id>/models")
@require_auth
@blp.response(200, ModelListSchema)
def list_provider_models(provider_id: str):
    """The models of one provider."""
    models = catalog.provider_models(provider_id)
    return {"models": models, "total": len(models)}


@blp.route("/providers/<provider_id>/health")
@require_auth
@blp.response(200, ProviderHealthSchema)
def provider_health(provider_id: str):
    """Whether a provider answers, and how fast."""
    return catalog.provider_health(provider_id)


@blp.route("/models")
@require_auth
@blp.arguments(ModelQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, ModelListSchema)
def list_models(provider: str | None = None, capability: str | None = None):
    """Every model of every configured provider, optionally filtered."""
    return catalog.models_listing(MODEL_LIST, provider=provider, capability=capability)


@blp.route("/models/<path:model_id>")
@require_auth
@blp.response(200, ModelSchema)
def get_model(model_id: str):
    """One model by id (`provider/model` also accepted)."""
    return catalog.model(model_id)
