"""`POST /api/v0.2/chat`: a persona, a conversation's history, one new message (or the results
of the tools its last answer called), one answer.

The persona is the request's, else the conversation's, else the user's chosen one, else the
default. The exchange is stored (every message, one transaction) only once the answer is
complete; a new conversation exists from then on.

Tools: the request's `tools` (OpenAI's function tools) and the persona's actions are offered
to the model, with `tool_choice`, `parallel_tool_calls` and `response_format`, all checked as
`/v1` checks them and refused by name when the provider cannot take them. An answer that calls
tools is stored with its calls; the conversation then waits for their results, which the next
request gives (`tool_results`, one for each call, with or without a new message). History goes
to the provider in OpenAI's shape (`ChatRequest.wire_messages`) once it holds tool turns.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from flask import Response

from blueprints.chat import exchange as exchanges
from blueprints.chat import personas, routing, store
from blueprints.chat.exchange import Exchange
from blueprints.chat.openai_request import check_parameters
from blueprints.chat.routing import Target
from blueprints.chat.store import Context, PersonaChoice, StoredTurn
from blueprints.chat.streaming import ChunkWriter, StreamOutcome
from gaia_app.errors import InvalidField, NotFound
from gaia_app.identity import Principal
from gaia_app.providers import params
from gaia_app.providers.base import ChatMessage
from gaia_app.providers.common import generous_token_estimate
from gaia_app.state import gaia

# The request's fields that are Chat Completions parameters (decided per provider by `params`).
TOOL_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls", "response_format")


@dataclass(frozen=True)
class _Turn:
    """One message on its way to the provider: its text (for counting, and for adapters that
    take text) and its OpenAI shape (for the others, once tools are involved)."""

    text: ChatMessage
    wire: dict

    @property
    def tokens(self) -> int:
        return generous_token_estimate(self.text.content)


def _turn(stored: StoredTurn) -> _Turn:
    if stored.role == "assistant" and stored.tool_calls:
        calls = [{"id": call["id"], "type": "function",
                  "function": {"name": call["name"], "arguments": call["arguments"]}} for call in stored.tool_calls]
        said = " ".join(call["name"] + call["arguments"] for call in stored.tool_calls)
        return _Turn(ChatMessage("assistant", (stored.content + " " + said).strip()),
                     {"role": "assistant", "content": stored.content or None, "tool_calls": calls})
    if stored.role == "tool":
        return _Turn(ChatMessage("tool", stored.content),
                     {"role": "tool", "tool_call_id": stored.tool_call_id, "content": stored.content})
    return _Turn(ChatMessage(stored.role, stored.content), {"role": stored.role, "content": stored.content})


def _fit_history(history: list[_Turn], budget: int | None) -> list[_Turn]:
    """The newest turns that fit in `budget` tokens (all of them when the window is unknown),
    never starting with a tool result whose call was left out."""
    kept: list[_Turn] = []
    for turn in reversed(history):
        if budget is not None:
            budget -= turn.tokens
            if budget < 0:
                break
        kept.append(turn)
    kept.reverse()
    while kept and kept[0].text.role == "tool":
        kept.pop(0)
    return kept


def _check_input(args: dict, max_chars: int) -> None:
    """What can be refused before anything is read."""
    text = args.get("message")
    if text is not None and not text.strip():
        raise InvalidField("message", "The message is empty.")
    if text is not None and len(text) > max_chars:
        raise InvalidField("message", f"The message is longer than {max_chars} characters.")
    results = args.get("tool_results") or []
    if results and args.get("conversation_id") is None:
        raise InvalidField("conversation_id", "Tool results continue a conversation: give its conversation_id.")
    seen: set[str] = set()
    for index, result in enumerate(results):
        if len(result["content"]) > max_chars:
            raise InvalidField(f"tool_results[{index}].content",
                               f"A tool result is longer than {max_chars} characters.")
        if result["tool_call_id"] in seen:
            raise InvalidField(f"tool_results[{index}].tool_call_id",
                               f"The tool call '{result['tool_call_id']}' is answered twice.")
        seen.add(result["tool_call_id"])


def _check_results(context: Context, results: list[dict], conversation_id: uuid.UUID) -> None:
    """The results answer exactly the calls of the conversation's last answer."""
    latest = context.latest
    waiting = [call["id"] for call in latest.tool_calls] if latest and latest.role == "assistant" else []
    strays = [(index, result["tool_call_id"]) for index, result in enumerate(results)
              if result["tool_call_id"] not in waiting]
    if strays:
        index, call_id = strays[0]
        where = f"tool_results[{index}].tool_call_id"
        if call_id in store.answered_calls(conversation_id, [call_id]):
            raise InvalidField(where, f"The tool call '{call_id}' was already answered.")
        still = f"the calls waiting are {', '.join(waiting)}" if waiting else "no call is waiting for a result"
        raise InvalidField(where, f"'{call_id}' matches no tool call of this conversation's last answer ({still}).")
    missing = [call_id for call_id in waiting if call_id not in {r["tool_call_id"] for r in results}]
    if missing:
        raise InvalidField("tool_results", "The conversation's last answer called tools: give a result for "
                                           f"each in tool_results (missing: {', '.join(missing)}).")


def _options(args: dict, persona: PersonaChoice | None) -> dict:
    """The request's tools and output format, with the persona's actions, checked."""
    options = {name: args[name] for name in TOOL_OPTIONS[1:] if args.get(name) is not None}
    tools = personas.merged_tools(args.get("tools"), persona.actions if persona else ())
    if tools:
        options["tools"] = tools
    else:
        for name in ("tool_choice", "parallel_tool_calls"):
            if name in options:
                raise InvalidField(name, f"'{name}' needs tools: give 'tools', or speak as a persona with actions.")
    check_parameters(options)
    return options


def _takers(target: Target, wanted: list[str], fallback: bool) -> list[Target]:
    """The target and its fallbacks among the providers that take `wanted`; a 422 naming
    what the target's provider cannot take."""
    kind = target.provider.kind
    for name in params.refused(wanted, kind):
        raise InvalidField(name, f"'{name}' is not supported by provider '{target.provider.id}' ({kind}) "
                                 f"for model '{target.model.id}'; choose another model.")
    return [t for t in routing.candidates(target, fallback)
            if t is target or not params.refused(wanted, t.provider.kind)]


def _read(principal: Principal, args: dict, history_messages: int) -> Context:
    conversation_id = args.get("conversation_id")
    context = store.read_context(principal.user_id, conversation_id, args.get("persona_id"), history_messages)
    if context is None:
        raise NotFound(f"No conversation with id '{conversation_id}'.")
    if context.persona is None and args.get("persona_id") is not None:
        raise NotFound(f"No persona with id '{args['persona_id']}'.")
    return context


def prepare(principal: Principal, args: dict) -> Exchange:
    llm = gaia().settings.llm
    _check_input(args, llm.max_message_chars)
    target = routing.resolve_target(args.get("model"), args.get("provider"))
    exchanges.check_max_tokens(args.get("max_tokens"), target.model)

    conversation_id = args.get("conversation_id")
    context = _read(principal, args, llm.history_messages)
    results = args.get("tool_results") or []
    if conversation_id is not None:
        _check_results(context, results, conversation_id)
    persona = context.persona
    options = _options(args, persona)

    system = [_turn(StoredTurn("system", persona.system_prompt))] if persona and persona.system_prompt else []
    new = [_turn(StoredTurn("tool", r["content"], tool_call_id=r["tool_call_id"])) for r in results]
    if args.get("message") is not None:
        new.append(_turn(StoredTurn("user", args["message"])))
    window = target.model.context_window
    budget = None
    if window:
        reserved = args.get("max_tokens") or min(target.model.max_tokens or 1024, 1024)
        budget = window - reserved - sum(turn.tokens for turn in system + new)
        if budget < 0:
            raise InvalidField("message", f"The message does not fit the context window of {target.label}.")
    turns = system + _fit_history([_turn(stored) for stored in context.history], budget) + new
    tool_turns = any(turn.text.role == "tool" or turn.wire.get("tool_calls") for turn in turns)
    return Exchange(
        principal=principal,
        kind="chat",
        targets=_takers(target, [*options, *(["tools"] if tool_turns else [])], args.get("fallback", True)),
        messages=tuple(turn.text for turn in turns),
        max_tokens=args.get("max_tokens"),
        temperature=args.get("temperature"),
        stream=bool(args.get("stream")),
        conversation_id=conversation_id or uuid.uuid4(),
        new_conversation=conversation_id is None,
        persona_id=persona.id if persona else None,
        user_message=args.get("message"),
        tool_results=tuple(results),
        expected_count=context.message_count if results else None,
        options=options,
        wire_messages=tuple(turn.wire for turn in turns) if tool_turns else None,
    )


def answer(exchange: Exchange) -> dict:
    target, completion = exchanges.complete(exchange)
    body = {
        "response": completion.text,
        "provider": target.provider.id,
        "model": target.model.id,
        "conversation_id": exchange.conversation_id,
        "persona_id": exchange.persona_id,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage.as_dict(),
        "response_time_ms": exchange.elapsed_ms,
    }
    if completion.tool_calls:
        body["tool_calls"] = [exchanges.call_view(call) for call in completion.tool_calls]
    return body


def stream(exchange: Exchange) -> Response:
    def closing(outcome: StreamOutcome, writer: ChunkWriter) -> list[bytes]:
        calls = exchanges.outcome_calls(outcome)
        last = {
            "usage": exchanges.outcome_usage(exchange, outcome).as_dict(),
            "provider": outcome.target.provider.id,
            "conversation_id": str(exchange.conversation_id),
            "persona_id": str(exchange.persona_id) if exchange.persona_id else None,
            "response_time_ms": exchange.elapsed_ms,
        }
        if calls:
            # Whole, in one delta as OpenAI's clients read them, and again on the last chunk in
            # the shape of the answer that is not streamed.
            last["tool_calls"] = [exchanges.call_view(call) for call in calls]
            return [writer.tool_calls(calls), writer.finish(outcome.finish_reason, last)]
        return [writer.finish(outcome.finish_reason, last)]

    return exchanges.stream_response(
        exchange,
        lambda target: target.model.id,
        closing,
        headers={"X-Conversation-Id": str(exchange.conversation_id)},
    )
