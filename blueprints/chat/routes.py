"""Routes of the chat service."""

from blueprints.chat import catalog, chat
from blueprints.chat.schemas import (
    ChatRequestSchema,
    ChatResponseSchema,
    ModelListSchema,
    ModelQuerySchema,
    ModelSchema,
    ProviderDetailSchema,
    ProviderHealthSchema,
    ProviderListSchema,
)
from gaia_app.blueprint import Blueprint
from gaia_app.constants import API_PREFIX
from gaia_app.identity import current_principal, require_auth

MODEL_LIST = ModelListSchema()

blp = Blueprint("chat", __name__, url_prefix=API_PREFIX, description="LLM providers, models and chat")


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


@blp.route("/chat", methods=["POST"])
@require_auth("chat")
@blp.arguments(ChatRequestSchema())
@blp.response(200, ChatResponseSchema)
@blp.doc(responses={
    "200": {"description": "The answer, or its stream", "content": {"application/json": {"schema": ChatResponseSchema}, "text/event-stream": {"schema": {
        "type": "string",
        "description": "With `\"stream\": true`: `chat.completion.chunk` events, then `data: [DONE]`",
    }}}},
    "404": {"description": "Unknown model, provider, persona or conversation"},
    "409": {"description": "Tool results: the conversation changed while the answer was written; nothing was stored"},
    "429": {"description": "Rate limited here, or by the provider (with Retry-After)"},
    "502": {"description": "The provider failed or answered garbage"},
    "504": {"description": "The provider did not answer in time"},
})
def post_chat(args):
    """Send a message and get the answer, in full or (`"stream": true`) as server-sent events.

    Streamed, the answer is `text/event-stream` of OpenAI-style `chat.completion.chunk`
    events; the last chunk carries `finish_reason`, `usage`, `provider` and `conversation_id`,
    then `data: [DONE]`. While the first token is late, `: keepalive` comments are sent. If
    the provider fails after the stream began, one `event: error` is sent (its data is
    `{"error": {"message", "type", "code", "provider"}}`), then `data: [DONE]`.

    With `tools` (and the persona's actions) the answer may call tools: `finish_reason` is
    `tool_calls` and `tool_calls` lists them (`id`, `name`, `arguments` as JSON text).
    Streamed, one chunk carries them whole in OpenAI's delta shape (`delta.tool_calls`, each
    with `index`, `id`, `type`, `function`), and the last chunk repeats them as `tool_calls`.
    The conversation then waits for their results: the next request gives `tool_results`
    (one `{"tool_call_id", "content"}` per call), with or without a new `message`.
    """
    exchange = chat.prepare(current_principal(), args)
    if exchange.stream:
        return chat.stream(exchange)
    return chat.answer(exchange)
