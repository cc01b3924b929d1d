"""`POST /api/v0.2/chat`: a persona, a conversation's history, one new message, one answer.

The persona is the request's, else the conversation's, else the user's chosen one, else the
default. The exchange is stored (both messages, one transaction) only once the answer is
complete; a new conversation exists from then on.
"""

from __future__ import annotations

import uuid

from flask import Response

from blueprints.chat import exchange as exchanges
from blueprints.chat import routing, store
from blueprints.chat.exchange import Exchange
from blueprints.chat.streaming import ChunkWriter, StreamOutcome
from gaia_app.errors import InvalidField, NotFound
from gaia_app.identity import Principal
from gaia_app.providers.base import ChatMessage
from gaia_app.providers.common import generous_token_estimate
from gaia_app.state import gaia


def _fit_history(history: list[ChatMessage], budget: int | None) -> list[ChatMessage]:
    """The newest turns that fit in `budget` tokens (all of them when the window is unknown)."""
    if budget is None:
        return history
    kept: list[ChatMessage] = []
    for message in reversed(history):
        budget -= generous_token_estimate(message.content)
        if budget < 0:
            break
        kept.append(message)
    kept.reverse()
    return kept


def prepare(principal: Principal, args: dict) -> Exchange:
    llm = gaia().settings.llm
    text = args["message"]
    if not text.strip():
        raise InvalidField("message", "The message is empty.")
    if len(text) > llm.max_message_chars:
        raise InvalidField("message", f"The message is longer than {llm.max_message_chars} characters.")
    target = routing.resolve_target(args.get("model"), args.get("provider"))
    exchanges.check_max_tokens(args.get("max_tokens"), target.model)

    user_id = principal.user_id
    conversation_id = args.get("conversation_id")
    context = store.read_context(user_id, conversation_id, args.get("persona_id"), llm.history_messages)
    if context is None:
        raise NotFound(f"No conversation with id '{conversation_id}'.")
    persona, history = context
    if persona is None and args.get("persona_id") is not None:
        raise NotFound(f"No persona with id '{args['persona_id']}'.")

    system = [ChatMessage("system", persona.system_prompt)] if persona and persona.system_prompt else []
    window = target.model.context_window
    budget = None
    if window:
        reserved = args.get("max_tokens") or min(target.model.max_tokens or 1024, 1024)
        budget = window - reserved - sum(generous_token_estimate(m.content) for m in system) - generous_token_estimate(text)
        if budget < 0:
            raise InvalidField("message", f"The message does not fit the context window of {target.label}.")
    history = _fit_history(history, budget)
    return Exchange(
        principal=principal,
        kind="chat",
        targets=routing.candidates(target, args.get("fallback", True)),
        messages=tuple(system + history + [ChatMessage("user", text)]),
        max_tokens=args.get("max_tokens"),
        temperature=args.get("temperature"),
        stream=bool(args.get("stream")),
        conversation_id=conversation_id or uuid.uuid4(),
        new_conversation=conversation_id is None,
        persona_id=persona.id if persona else None,
        user_message=text,
    )


def answer(exchange: Exchange) -> dict:
    target, completion = exchanges.complete(exchange)
    return {
        "response": completion.text,
        "provider": target.provider.id,
        "model": target.model.id,
        "conversation_id": exchange.conversation_id,
        "persona_id": exchange.persona_id,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage.as_dict(),
        "response_time_ms": exchange.elapsed_ms,
    }


def stream(exchange: Exchange) -> Response:
    def closing(outcome: StreamOutcome, writer: ChunkWriter) -> list[bytes]:
        return [writer.finish(outcome.finish_reason, {
            "usage": exchanges.outcome_usage(exchange, outcome).as_dict(),
            "provider": outcome.target.provider.id,
            "conversation_id": str(exchange.conversation_id),
            "persona_id": str(exchange.persona_id) if exchange.persona_id else None,
            "response_time_ms": exchange.elapsed_ms,
        })]

    return exchanges.stream_response(
        exchange,
        lambda target: target.model.id,
        closing,
        headers={"X-Conversation-Id": str(exchange.conversation_id)},
    )
