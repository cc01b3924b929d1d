"""The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`.

So that the official OpenAI SDKs work unchanged with `base_url=<gaia>/v1` and a Gaia API key.
Stateless like OpenAI's (the client sends the whole conversation); a model id may be
`persona:<name>`, which answers as that persona with the default model. Errors come in
OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the same statuses.
"""

from __future__ import annotations

import json
import time
import uuid

from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from blueprints.chat import exchange as exchanges
from blueprints.chat import personas, routing
from blueprints.chat.exchange import Exchange
from blueprints.chat.openai_schemas import (
    STREAM_DESCRIPTION,
    OpenAIChatCompletionRequestSchema,
    OpenAIChatCompletionSchema,
    OpenAIModelObjectListSchema,
    OpenAIModelObjectSchema,
)
from blueprints.chat.streaming import ChunkWriter, StreamOutcome
from gaia_app import json_body
from gaia_app.blueprint import Blueprint
from gaia_app.errors import APIError, InvalidField, InvalidRequest, UnknownModel
from gaia_app.identity import current_principal, require_auth
from gaia_app.providers.base import ChatMessage
from gaia_app.providers.common import prompt_tokens
from gaia_app.schemas import text_problem
from gaia_app.state import gaia

# Errors here are rendered in OpenAI's shape by the app's one handler set (`gaia_app.errors`),
# which speaks it on every /v1 path.
blp = Blueprint("openai", __name__, url_prefix="/v1", description="OpenAI-compatible API")

PERSONA_PREFIX = "persona:"
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _invalid(message: str, param: str | None = None) -> APIError:
    return InvalidField(param, message) if param else InvalidRequest(message)


def _int_field(body: dict, name: str, minimum: int, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _invalid(f"'{name}' must be an integer from {minimum} to {maximum}.", name)
    return value


def _messages(body: dict) -> list[ChatMessage]:
    llm = gaia().settings.llm
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _invalid("'messages' must be a non-empty array.", "messages")
    if len(raw) > llm.max_messages:
        raise _invalid(f"'messages' has {len(raw)} entries; at most {llm.max_messages} are allowed.", "messages")
    found = []
    for index, message in enumerate(raw):
        param = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in ROLES:
            raise _invalid(f"{param} needs a role: system, developer, user or assistant.", param)
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise _invalid(f"{param}.content: only text parts are supported.", f"{param}.content")
            content = "".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise _invalid(f"{param}.content must be a string or an array of text parts.", f"{param}.content")
        problem = text_problem(content)
        if problem:
            raise _invalid(f"{param}.content: {problem}", f"{param}.content")
        if len(content) > llm.max_message_chars:
            raise _invalid(f"{param}.content is longer than {llm.max_message_chars} characters.", f"{param}.content")
        found.append(ChatMessage(ROLES[role], content))
    if not any(m.role == "user" for m in found):
        raise _invalid("'messages' needs at least one user message.", "messages")
    return found


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


def _prepare(body: dict) -> tuple[Exchange, str, bool]:
    principal = current_principal()
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        raise _invalid("'model' is required: a model id from GET /v1/models.", "model")
    if body.get("n", 1) != 1:
        raise _invalid("Only n=1 is supported.", "n")
    if body.get("tools") or body.get("functions"):
        raise _invalid("Tools and functions are not supported.", "tools")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("'stream' must be true or false.", "stream")
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2):
        raise _invalid("'temperature' must be a number from 0 to 2.", "temperature")
    tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int_field(body, tokens_field, 1, 1_000_000)
    messages = _messages(body)

    persona_id = None
    if model.startswith(PERSONA_PREFIX):
        persona = personas.find_persona_by_name(principal.user_id, model[len(PERSONA_PREFIX):])
        if persona is None:
            raise UnknownModel(f"The model `{model}` does not exist: no persona of that name.")
        persona_id = persona.id
        messages.insert(0, ChatMessage("system", persona.system_prompt))
        target = routing.resolve_target(None, None)
    else:
        target = routing.resolve_target(model, None)
    exchanges.check_max_tokens(max_tokens, target.model, tokens_field)
    _check_fits(messages, target, max_tokens)
    options = body.get("stream_options")
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    exchange = Exchange(
        principal=principal,
        kind="chat.completions",
        targets=routing.candidates(target, True),
        messages=tuple(messages),
        max_tokens=max_tokens,
        temperature=temperature,
        stream=stream,
        persona_id=persona_id,
    )
    return exchange, model, include_usage


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
    if not request.is_json:
        raise UnsupportedMediaType("The request body must be JSON (Content-Type: application/json).")
    try:
        body = json_body.loads(json_body.request_body(request), openai_paths=True)
    except json.JSONDecodeError:
        raise InvalidRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    exchange, model_name, include_usage = _prepare(body)

    def response_model(target) -> str:
        # A persona model keeps the name the client asked for.
        return model_name if model_name.startswith(PERSONA_PREFIX) else target.model.id

    if not exchange.stream:
        target, completion = exchanges.complete(exchange)
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
        }

    def closing(outcome: StreamOutcome, writer: ChunkWriter) -> list[bytes]:
        events = [writer.finish(outcome.finish_reason)]
        if include_usage:
            events.append(writer.usage_only(exchanges.outcome_usage(exchange, outcome).as_dict()))
        return events

    return exchanges.stream_response(exchange, response_model, closing)


def _model_entries() -> list[dict]:
    seen = set()
    entries = []
    for model in routing.registry().models():
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
    for entry in _model_entries():
        if entry["id"] == model_id:
            return entry
    raise UnknownModel(f"The model `{model_id}` does not exist or you do not have access to it.")
