"""The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`.

So that the official OpenAI SDKs work unchanged with `base_url=<gaia>/v1` and a Gaia API key.
Stateless like OpenAI's (the client sends the whole conversation); a model id may be
`persona:<name>`, which answers as that persona with the default model. Errors come in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the same statuses.
"""

from __future__ import annotations

import time
import uuid

from flask import request

from blueprints.chat import exchange as exchanges
from blueprints.chat import personas, routing
from blueprints.chat.exchange import Exchange
from blueprints.chat.openai_request import check_parameters, invalid, read_body, read_messages
from blueprints.chat.openai_schemas import (
    STREAM_DESCRIPTION,
    OpenAIChatCompletionRequestSchema,
    OpenAIChatCompletionSchema,
    OpenAIModelObjectListSchema,
    OpenAIModelObjectSchema,
)
from blueprints.chat.streaming import ChunkWriter, StreamOutcome
from gaia_app.blueprint import Blueprint
from gaia_app.errors import InvalidField, UnknownModel
from gaia_app.identity import current_principal, require_auth
from gaia_app.providers import embeddings, params
from gaia_app.providers.base import ChatMessage
from gaia_app.providers.common import prompt_tokens
from gaia_app.state import gaia

# Errors here are rendered in OpenAI's shape by the app's one handler set (`gaia_app.errors`),
# which speaks it on every /v1 path.
blp = Blueprint("openai", __name__, url_prefix="/v1", description="OpenAI-compatible API")

PERSONA_PREFIX = "persona:"
# A request (or, with GAIA_DROP_UNSUPPORTED_PARAMS, the deployment) may let Gaia drop the
# parameters a provider cannot take; the response then names them.
DROP_HEADER = "X-Gaia-Drop-Params"
DROPPED_HEADER = "X-Gaia-Dropped-Params"


def _int_field(body: dict, name: str, minimum: int, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise invalid(f"'{name}' must be an integer from {minimum} to {maximum}.", name)
    return value


class ContextTooLong(InvalidField):
    openai_code = "context_length_exceeded"


def _check_fits(messages: list[ChatMessage], target, max_tokens: int | None) -> None:
    """Refuse a conversation the model cannot read, as OpenAI does. Counted in words and
    marks, which tokenizers never undercount, so nothing that fits is refused."""
    window = target.model.context_window
    if not window:
        return
    reserved = max_tokens or min(target.model.max_tokens or 1024, 1024)
    needed = prompt_tokens(messages) + reserved
    if needed > window:
        raise ContextTooLong(
            "messages",
            f"This model's context window is {window} tokens; the messages need about "
            f"{needed - reserved} and the answer {reserved}.",
        )


def _drop_allowed() -> bool:
    asked = request.headers.get(DROP_HEADER, "").strip().lower()
    return asked in ("1", "true", "yes") or gaia().settings.llm.drop_unsupported_params


def _reads(model, features: set[str]) -> bool:
    """Whether the model can read the messages' images: refused only for a model known not
    to (one whose capabilities Gaia does not know goes through, and the provider decides)."""
    return "image_url" not in features or not model.capabilities_known or "vision" in model.capabilities


def _unsupported(target, used: list[str], features: set[str]) -> list[str]:
    """The parameters to drop for `target` (only when dropping is allowed); refuses the request
    when it uses what the provider cannot take. Features of the messages are never dropped."""
    kind, provider = target.provider.kind, target.provider.id
    for feature in params.refused(sorted(features), kind):
        raise invalid(f"The messages use {feature!r}, which provider '{provider}' ({kind}) does not "
                      f"support; choose another model.", "messages")
    if not _reads(target.model, features):
        raise invalid(f"The messages hold images, which model '{target.model.id}' does not read "
                      "(it has no 'vision' capability); choose a model that does.", "messages")
    refused = params.refused(used, kind)
    if refused and not _drop_allowed():
        raise invalid(
            f"'{refused[0]}' is not supported by provider '{provider}' ({kind}) for model "
            f"'{target.model.id}'. Remove it, choose another model, or send {DROP_HEADER}: true "
            "to have it dropped (the response then names what was dropped).", refused[0])
    return refused


def _prepare(body: dict) -> tuple[Exchange, str, list[str]]:
    principal = current_principal()
    llm = gaia().settings.llm
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        raise invalid("'model' is required: a model id from GET /v1/models.", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("'stream' must be true or false.", "stream")
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2):
        raise invalid("'temperature' must be a number from 0 to 2.", "temperature")
    tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int_field(body, tokens_field, 1, 1_000_000)
    wire, messages = read_messages(body.get("messages"), llm.max_messages, llm.max_message_chars)

    persona = None
    if model.startswith(PERSONA_PREFIX):
        persona = personas.find_persona_by_name(principal.user_id, model[len(PERSONA_PREFIX):])
        if persona is None:
            raise UnknownModel(f"The model `{model}` does not exist: no persona of that name.")
        # Its actions join the request's tools (the request's win on a name both use).
        body = personas.with_actions(body, persona.actions)
    check_parameters(body)

    persona_id = None
    if persona is not None:
        persona_id = persona.id
        messages.insert(0, ChatMessage("system", persona.system_prompt))
        wire = ({"role": "system", "content": persona.system_prompt}, *wire)
        target = routing.resolve_target(None, None)
    else:
        target = routing.resolve_target(model, None)
    exchanges.check_max_tokens(max_tokens, target.model, tokens_field)
    _check_fits(messages, target, max_tokens)
    features = params.features_of(wire)
    used = [name for name in body if name not in params.CORE]
    dropped = _unsupported(target, used, features)
    options = {name: body[name] for name in used if name not in dropped}
    wanted = [*options, *features]
    stream_options = body.get("stream_options")
    exchange = Exchange(
        principal=principal,
        kind="chat.completions",
        # Fallbacks only among providers that take the whole request.
        targets=[t for t in routing.candidates(target, True)
                 if t is target or (not params.refused(wanted, t.provider.kind) and _reads(t.model, features))],
        messages=tuple(messages),
        max_tokens=max_tokens,
        temperature=temperature,
        stream=stream,
        persona_id=persona_id,
        options=options,
        wire_messages=wire,
        prepended=1 if persona_id else 0,
        relay=True,
        relay_model=model if persona_id else None,
        relay_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
    )
    return exchange, model, dropped


@blp.route("/chat/completions", methods=["POST"])
@require_auth("chat")
@blp.doc(
    summary="Create a chat completion (OpenAI-compatible)",
    requestBody={"required": True, "content": {"application/json": {"schema": OpenAIChatCompletionRequestSchema}}},
    responses={"200": {
        "description": "The completion; " + STREAM_DESCRIPTION,
        "content": {"application/json": {"schema": OpenAIChatCompletionSchema},
                    "text/event-stream": {"schema": {"type": "string"}}},
    }},
)
def chat_completions():
    """OpenAI's Chat Completions API, streamed (`"stream": true`) or not."""
    exchange, model_name, dropped = _prepare(read_body())
    headers = {DROPPED_HEADER: ", ".join(dropped)} if dropped else {}

    def response_model(target) -> str:
        # A persona model keeps the name the client asked for.
        return model_name if model_name.startswith(PERSONA_PREFIX) else target.model.id

    if not exchange.stream:
        target, completion = exchanges.complete(exchange)
        if completion.raw is not None:
            return completion.raw, 200, headers
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": response_model(target),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": completion.text, "refusal": None},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }],
            "usage": completion.usage.as_dict(),
        }, 200, headers

    def closing(outcome: StreamOutcome, writer: ChunkWriter) -> list[bytes]:
        if outcome.relayed:
            return []  # the provider's own last chunks went out as they came
        events = [writer.finish(outcome.finish_reason)]
        if exchange.relay_usage:
            events.append(writer.usage_only(exchanges.outcome_usage(exchange, outcome).as_dict()))
        return events

    return exchanges.stream_response(exchange, response_model, closing, headers)


def _model_entries() -> list[dict]:
    seen = set()
    entries = []
    reg = routing.registry()
    # Chat models, then the embedding models known of each provider (gaia-local-embed, ...).
    known_embeddings = [model for provider in reg.providers() for model in embeddings.embedding_models(provider)]
    for model in [*reg.models(), *known_embeddings]:
        if model.id not in seen:
            seen.add(model.id)
            entries.append({"id": model.id, "object": "model", "created": 0, "owned_by": model.provider})
    for persona in personas.visible_personas(current_principal().user_id):
        entries.append({"id": PERSONA_PREFIX + persona.name, "object": "model", "created": 0, "owned_by": "gaia"})
    return entries


@blp.route("/models")
@require_auth("chat")
@blp.doc(summary="List models (OpenAI-compatible), personas included as persona:<name>",
         responses={"200": {"description": "The models",
                            "content": {"application/json": {"schema": OpenAIModelObjectListSchema}}}})
def list_models():
    """Every model of every configured provider, and `persona:<name>` for each persona."""
    return {"object": "list", "data": _model_entries()}


@blp.route("/models/<path:model_id>")
@require_auth("chat")
@blp.doc(summary="Retrieve a model (OpenAI-compatible)",
         responses={"200": {"description": "The model",
                            "content": {"application/json": {"schema": OpenAIModelObjectSchema}}}})
def get_model(model_id: str):
    """Every id chat or embeddings accept: a listed one, `persona:<name>`, or `<provider>/<model>`."""
    for entry in _model_entries():
        if entry["id"] == model_id:
            return entry
    if "/" in model_id:
        found = routing.find_model(model_id) or embeddings.find_embedding_model(routing.registry(), model_id)
        if found is not None:
            return {"id": model_id, "object": "model", "created": 0, "owned_by": found.provider}
    raise UnknownModel(f"The model `{model_id}` does not exist or you do not have access to it.")
