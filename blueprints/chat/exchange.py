"""One chat request on its way through Gaia, whichever API it came in by.

`Exchange` holds what goes to the provider and what to keep afterwards. Both the chat API
(`/api/v0.2/chat`, with conversations) and the OpenAI-compatible API (`/v1/chat/completions`,
stateless) run through here: the provider call with fallback, the stream relay, and the
usage event written off the request path.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Response, current_app

from blueprints.chat import routing
from blueprints.chat import store as store_exchange
from blueprints.chat.routing import Target
from blueprints.chat.streaming import ChunkWriter, StreamOutcome, StreamRelay, relay_events
from gaia_app.errors import Conflict, InvalidField
from gaia_app.extensions import db, release_connection
from gaia_app.identity import Principal
from gaia_app.models import utcnow
from gaia_app.providers import common, params
from gaia_app.providers.base import (
    ChatMessage,
    ChatRequest,
    Completion,
    ModelInfo,
    ProviderError,
    ToolCall,
    Usage,
)
from gaia_app.state import gaia

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class Exchange:
    principal: Principal
    kind: str  # "chat" or "chat.completions"
    targets: list[Target]
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    started: float = field(default_factory=time.monotonic)
    # Set for the chat API: where the exchange is stored once it has succeeded.
    conversation_id: uuid.UUID | None = None
    new_conversation: bool = False
    persona_id: uuid.UUID | None = None
    user_message: str | None = None
    user_message_at: datetime = field(default_factory=utcnow)
    # The results of the tools the conversation's last answer called ({"tool_call_id",
    # "content"} each), stored before the user's message; and the conversation's message count
    # they were checked against (they are stored only if it has not changed).
    tool_results: tuple[dict, ...] = ()
    expected_count: int | None = None
    # The OpenAI-compatible API: parameters beyond the core (each target takes the ones its
    # kind forwards or translates, `providers.params`), the messages as sent, and the relay.
    options: dict = field(default_factory=dict)
    wire_messages: tuple[dict, ...] | None = None
    prepended: int = 0
    relay: bool = False
    relay_model: str | None = None
    relay_usage: bool = False

    def request_for(self, target: Target) -> ChatRequest:
        kind = target.provider.kind
        return ChatRequest(
            model=target.model.id,
            messages=self.messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            options={name: value for name, value in self.options.items()
                     if params.handling(name, kind) in (params.FORWARD, params.TRANSLATE)},
            wire_messages=self.wire_messages,
            prepended=self.prepended,
            relay=self.relay,
            relay_model=self.relay_model,
            relay_usage=self.relay_usage,
        )

    @property
    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 1)


def check_max_tokens(max_tokens: int | None, model: ModelInfo, field_name: str = "max_tokens") -> None:
    if max_tokens is not None and model.max_tokens is not None and max_tokens > model.max_tokens:
        raise InvalidField(
            field_name,
            f"{field_name} is {max_tokens}, but {model.provider}/{model.id} writes at most "
            f"{model.max_tokens} tokens.",
        )


# -- not streamed -------------------------------------------------------------------------


def complete(exchange: Exchange) -> tuple[Target, Completion]:
    """Ask the providers in turn; store and record. Raises a problem when none answers."""
    # No connection is held while a provider thinks (the /v1 persona lookup may have used one).
    # A request that never opened a session (most of /v1) has nothing to give back: closing
    # would only make a session to close it.
    if db.session.registry.has():
        release_connection()
    try:
        target, completion = routing.complete(exchange.targets, exchange.request_for)
    except ProviderError as error:
        record_usage(exchange, None, None, "error", error=error)
        raise routing.problem_for(error) from None
    stored = store(exchange, target, completion.text, completion.usage, completion.tool_calls)
    record_usage(exchange, target, completion.usage, "ok")
    if not stored and exchange.tool_results:
        raise Conflict(
            "The conversation changed while the answer was being written (its tool calls were "
            "answered by another request, or it was deleted); nothing was stored."
        )
    return target, completion


# -- streamed -----------------------------------------------------------------------------


# After a provider accepted a streamed request, how long to wait for its first chunk before
# the response starts anyway (with an SSE comment): an error that quick is still answered
# with a real HTTP status.
OPENED_GRACE = 0.25


def open_stream(exchange: Exchange):
    """Start the relay and wait for its first events: up to the keepalive interval for a
    provider to accept, then up to OPENED_GRACE for its first chunk.

    A failure of every provider before anything was sent is raised as a problem (a real HTTP
    status, with Retry-After); otherwise returns (relay, the event to send first, or None when
    the response should start with a keepalive comment).
    """
    # No connection is held while a provider thinks (the /v1 persona lookup may have used one).
    # A request that never opened a session (most of /v1) has nothing to give back: closing
    # would only make a session to close it.
    if db.session.registry.has():
        release_connection()
    relay = StreamRelay(exchange.targets, exchange.request_for)
    keepalive = gaia().settings.llm.stream_keepalive
    first = relay.next(keepalive)
    if first is not None and first[0] == "opened":
        following = relay.next(min(OPENED_GRACE, keepalive))
        first = first if following is None else following
    if first is not None and first[0] == "error" and not first[2]:
        record_usage(exchange, None, None, "error", error=first[1])
        raise routing.problem_for(first[1])
    return relay, first


def stream_response(
    exchange: Exchange,
    model_name: Callable[[Target], str],
    closing: Callable[[StreamOutcome, ChunkWriter], list[bytes]],
    headers: dict | None = None,
) -> Response:
    """The streamed answer of either API: chunks named `model_name(target)`, then `closing`."""
    relay, first = open_stream(exchange)
    app = current_app._get_current_object()
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    body = relay_events(
        relay,
        first,
        gaia(app).settings.llm.stream_keepalive,
        lambda target: ChunkWriter(completion_id, model_name(target)),
        closing,
        lambda outcome: finish_stream(app, exchange, outcome),
    )
    return Response(body, mimetype="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})


def outcome_usage(exchange: Exchange, outcome: StreamOutcome) -> Usage:
    """What a stream used: as its provider reported, else counted here."""
    return outcome.reported_usage or estimate_usage(exchange, outcome.text)


def finish_stream(app, exchange: Exchange, outcome: StreamOutcome) -> None:
    """After a stream, whatever happened: store a complete answer, record usage always.

    Runs at the end of the response body, outside the request, hence the explicit app.
    """
    with app.app_context():
        target = outcome.target
        try:
            if outcome.error is not None:
                record_usage(exchange, target, outcome_usage(exchange, outcome), "error",
                             error=outcome.error, first_token_at=outcome.first_token_at)
            elif outcome.cancelled or target is None:
                record_usage(exchange, target, estimate_usage(exchange, outcome.text), "cancelled",
                             first_token_at=outcome.first_token_at)
            else:
                usage = outcome_usage(exchange, outcome)
                if not store(exchange, target, outcome.text, usage, outcome_calls(outcome)):
                    log.warning("a streamed answer was not stored: its conversation changed meanwhile")
                record_usage(exchange, target, usage, "ok", first_token_at=outcome.first_token_at)
        finally:
            db.session.remove()


def outcome_calls(outcome: StreamOutcome) -> tuple[ToolCall, ...]:
    """The tools a complete stream's answer calls."""
    return outcome.chunk.tool_calls if outcome.chunk else ()


def estimate_usage(exchange: Exchange, text: str) -> Usage:
    """Tokens counted here, for a provider that reported none (or an answer cut short)."""
    return common.estimate_usage(exchange.messages, text)


# -- keeping it ---------------------------------------------------------------------------


def store(exchange: Exchange, target: Target, text: str, usage: Usage,
          tool_calls: tuple[ToolCall, ...] = ()) -> bool:
    """The tool results, the user's message and the answer, together (nothing half-stored).
    Returns False when the conversation changed meanwhile and nothing was stored."""
    if exchange.conversation_id is None:
        return True
    # In the order they were said, each after the one before even on a clock that did not
    # move: history is ordered by time.
    said = [{"role": "tool", "content": result["content"], "tool_call_id": result["tool_call_id"]}
            for result in exchange.tool_results]
    if exchange.user_message is not None:
        said.append({"role": "user", "content": exchange.user_message})
    messages = [store_exchange.NewMessage(created_at=exchange.user_message_at + timedelta(microseconds=at), **fields)
                for at, fields in enumerate(said)]
    messages.append(store_exchange.NewMessage(
        role="assistant",
        content=text,
        created_at=max(utcnow(), exchange.user_message_at + timedelta(microseconds=len(said))),
        provider=target.provider.id,
        model=target.model.id,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        tool_calls=[call_view(call) for call in tool_calls] or None,
    ))
    return store_exchange.save_exchange(
        new=exchange.new_conversation,
        conversation_id=exchange.conversation_id,
        user_id=exchange.principal.user_id,
        persona_id=exchange.persona_id,
        title=_title(exchange.user_message or ""),
        messages=messages,
        provider=target.provider.id,
        model=target.model.id,
        expected_count=exchange.expected_count,
    )


def call_view(call: ToolCall) -> dict:
    """A tool call as the chat API shows and stores it."""
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def _title(message: str) -> str:
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= 80 else line[:79] + "…"


def record_usage(
    exchange: Exchange,
    target: Target | None,
    usage: Usage | None,
    status: str,
    *,
    error: ProviderError | None = None,
    first_token_at: float | None = None,
) -> None:
    if target is None:
        # Nothing answered: the usage names the last provider tried, with its model.
        tried = [t for t in exchange.targets if error is not None and t.provider.id == error.provider]
        target_model = (tried[-1] if tried else exchange.targets[0]).model
    model = target.model if target else target_model
    usage = usage or Usage(0, 0)
    cost = None
    if model.input_price_per_mtok is not None and model.output_price_per_mtok is not None:
        cost = round(
            (usage.prompt_tokens * model.input_price_per_mtok
             + usage.completion_tokens * model.output_price_per_mtok) / 1_000_000, 8
        )
    gaia().usage.record(
        user_id=exchange.principal.user_id,
        api_key_id=exchange.principal.key_id,
        conversation_id=exchange.conversation_id if status == "ok" else None,
        kind=exchange.kind,
        provider=model.provider,
        model=model.id,
        stream=exchange.stream,
        status=status,
        error_type=error.kind if error else None,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cost=cost,
        latency_ms=exchange.elapsed_ms,
        first_token_ms=(
            round((first_token_at - exchange.started) * 1000, 1) if first_token_at else None
        ),
    )
