"""The reads and writes of one chat exchange, in as few database round trips as they allow.

Every chat request reads a persona (and a conversation's history) before the provider call
and writes its messages after it (the tool results it gives, the user's message, the answer);
between the two it holds no connection, since the call may take seconds. Reads run outside a
transaction (one round trip each). On PostgreSQL the write is a single statement (the
conversation row and every message, atomic by itself); on SQLite, where the database is
in-process, it is a short transaction.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Integer, bindparam, func, literal, or_, select, text, true

from gaia_app.extensions import db
from gaia_app.models import DEFAULT_PERSONA_ID, Conversation, Message, Persona, UserPersonaPreference
from gaia_app.state import gaia

_conversations = Conversation.__table__
_messages = Message.__table__


def _autocommit():
    """A connection for single statements: no BEGIN/COMMIT round trips."""
    return db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")


@dataclass(frozen=True)
class PersonaChoice:
    id: uuid.UUID
    system_prompt: str
    # Its actions: OpenAI function tools offered whenever it speaks.
    actions: tuple = ()


@dataclass(frozen=True)
class StoredTurn:
    """One stored message, as a chat's history needs it."""

    role: str
    content: str
    # An assistant message's calls ({"id", "name", "arguments"} each); a tool result's call.
    tool_calls: tuple = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class Context:
    """What a chat reads before the provider call."""

    persona: PersonaChoice | None
    # The last messages, oldest first (CHAT_HISTORY_MESSAGES of them).
    history: list[StoredTurn]
    # The newest message, whatever the history's length (None in an empty conversation).
    latest: StoredTurn | None = None
    message_count: int = 0


# Built once: a chat request only binds values to them.
_PERSONA_COLUMNS = (Persona.id, Persona.system_prompt, Persona.actions)
_VISIBLE_PERSONA = select(*_PERSONA_COLUMNS).where(
    Persona.id == bindparam("persona_id"),
    or_(Persona.owner_id.is_(None), Persona.owner_id == bindparam("user_id")),
)
_CHOSEN_PERSONA = select(*_PERSONA_COLUMNS).where(
    Persona.id == func.coalesce(
        bindparam("fallback", type_=Persona.id.type),
        select(UserPersonaPreference.persona_id)
        .where(UserPersonaPreference.user_id == bindparam("user_id"))
        .scalar_subquery(),
        literal(DEFAULT_PERSONA_ID, Persona.id.type),
    )
)
# The conversation (if it is the user's) with its newest messages: the inner query walks the
# (conversation_id, created_at, id) index backwards and stops after `history` rows, however
# long the conversation.
_NEWEST = (
    select(_messages.c.role, _messages.c.content, _messages.c.tool_calls, _messages.c.tool_call_id,
           _messages.c.created_at, _messages.c.id)
    .where(_messages.c.conversation_id == bindparam("conversation_id"))
    .order_by(_messages.c.created_at.desc(), _messages.c.id.desc())
    .limit(bindparam("history", type_=Integer))
    .subquery()
)
_HISTORY = (
    select(_conversations.c.persona_id, _conversations.c.message_count, _NEWEST.c.role, _NEWEST.c.content,
           _NEWEST.c.tool_calls, _NEWEST.c.tool_call_id)
    .select_from(_conversations.outerjoin(_NEWEST, true()))
    .where(_conversations.c.id == bindparam("conversation_id"), _conversations.c.user_id == bindparam("user_id"))
    .order_by(_NEWEST.c.created_at.desc(), _NEWEST.c.id.desc())
)


class PersonaCache:
    """Which persona (and system prompt) a user gets, remembered in this process.

    Entries are keyed by (user, requested persona, conversation's persona) and trusted for
    the credential cache's TTL: with Redis, persona changes are pushed to every process
    (messages "personas:<user id>", or "personas:*" for built-in personas) and entries live
    60 s; without it they live 1 s, which bounds how stale another process can be.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[PersonaChoice | None, float]] = {}
        # Bumped by every invalidation: an answer read before one is not cached after it.
        self.generation = 0

    def get(self, key: tuple):
        found = self._entries.get(key)
        if found is None or found[1] < time.monotonic():
            return _MISSING
        return found[0]

    def put(self, key: tuple, value: PersonaChoice | None, ttl: float, generation: int) -> None:
        if generation != self.generation or ttl <= 0:
            return
        if len(self._entries) >= 10_000:
            self._entries.clear()
        self._entries[key] = (value, time.monotonic() + ttl)

    def invalidate(self, value: str) -> None:
        """"*" (every user: a built-in persona changed) or one user's id."""
        self.generation += 1
        if value == "*":
            self._entries.clear()
            return
        for key in [key for key in self._entries if str(key[0]) == value]:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


_MISSING = object()


_CACHE_NAME = "chat.personas"


def persona_cache(app=None) -> PersonaCache:
    return gaia(app).services[_CACHE_NAME]  # type: ignore[return-value]


def install_persona_cache(app) -> None:
    cache = PersonaCache()
    state = gaia(app)
    state.services[_CACHE_NAME] = cache
    state.bus.register("personas", cache.invalidate, cache.clear)


def _persona_ttl() -> float:
    state = gaia()
    return state.bus.ttl(state.settings.auth_cache_ttl)


def _turn(row) -> StoredTurn:
    return StoredTurn(row.role, row.content, tuple(row.tool_calls or ()), row.tool_call_id)


def read_context(
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    persona_id: uuid.UUID | None,
    history: int,
) -> Context | None:
    """What a chat needs before the provider call, on one connection:

    - the conversation's history (its last `history` messages, oldest first), its newest
      message and its message count, if one is named; None for the whole result when it is
      not the user's (or does not exist);
    - the persona: the requested one if the user may see it (else None), otherwise the
      conversation's, else the user's chosen one, else the default.
    """
    context = Context(None, [])
    conversation_persona = None
    cache = persona_cache()
    if conversation_id is None:
        persona = cache.get((user_id, persona_id, None))
        if persona is not _MISSING:
            return Context(persona, [])
    generation = cache.generation
    with _autocommit() as connection:
        if conversation_id is not None:
            rows = connection.execute(
                _HISTORY, {"conversation_id": conversation_id, "user_id": user_id, "history": max(history, 1)}
            ).all()
            if not rows:
                return None
            conversation_persona = rows[0].persona_id
            turns = [_turn(row) for row in reversed(rows) if row.role is not None]
            context = Context(None, turns if history > 0 else [], turns[-1] if turns else None,
                              rows[0].message_count)
        key = (user_id, persona_id, conversation_persona)
        persona = cache.get(key)
        if persona is _MISSING:
            if persona_id is not None:
                row = connection.execute(_VISIBLE_PERSONA, {"persona_id": persona_id, "user_id": user_id}).first()
            else:
                row = connection.execute(
                    _CHOSEN_PERSONA, {"fallback": conversation_persona, "user_id": user_id}
                ).first()
            persona = PersonaChoice(row.id, row.system_prompt, tuple(row.actions or ())) if row else None
            cache.put(key, persona, _persona_ttl(), generation)
    return Context(persona, context.history, context.latest, context.message_count)


def answered_calls(conversation_id: uuid.UUID, call_ids: list[str]) -> set[str]:
    """Which of `call_ids` a stored tool result of the conversation already answers."""
    with _autocommit() as connection:
        found = connection.execute(
            select(_messages.c.tool_call_id).where(
                _messages.c.conversation_id == conversation_id, _messages.c.tool_call_id.in_(call_ids)
            )
        ).scalars()
        return set(found)


@dataclass(frozen=True)
class NewMessage:
    """A message to store with an exchange."""

    role: str
    content: str
    created_at: datetime
    provider: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tool_calls: list | None = None
    tool_call_id: str | None = None

    def row(self, conversation_id: uuid.UUID) -> dict:
        return {"id": uuid.uuid4(), "conversation_id": conversation_id, "role": self.role,
                "content": self.content, "provider": self.provider, "model": self.model,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "tool_calls": self.tool_calls, "tool_call_id": self.tool_call_id,
                "created_at": self.created_at}


# PostgreSQL: the conversation row and the messages in one atomic statement. When continuing,
# the messages are only added if the conversation still exists (it may have been deleted
# while the answer was being written) and, when `expected_count` is given, still holds that
# many messages (tool results are stored once, whatever answers the same calls at once).
_EXCHANGE_PG = """
WITH conversation AS ({conversation})
INSERT INTO messages (id, conversation_id, role, content, provider, model, prompt_tokens, completion_tokens,
                      tool_calls, tool_call_id, created_at)
SELECT v.id, conversation.id, v.role, v.content, v.provider, v.model, v.prompt_tokens, v.completion_tokens,
       v.tool_calls, v.tool_call_id, v.created_at
FROM conversation, (VALUES
{values}
) AS v (id, role, content, provider, model, prompt_tokens, completion_tokens, tool_calls, tool_call_id, created_at)
"""
_VALUES_PG = (
    "(CAST(:id_{i} AS uuid), CAST(:role_{i} AS varchar), CAST(:content_{i} AS text), "
    "CAST(:provider_{i} AS varchar), CAST(:model_{i} AS varchar), CAST(:prompt_tokens_{i} AS integer), "
    "CAST(:completion_tokens_{i} AS integer), CAST(:tool_calls_{i} AS json), CAST(:tool_call_id_{i} AS varchar), "
    "CAST(:created_at_{i} AS timestamptz))"
)
_NEW_CONVERSATION_PG = """
    INSERT INTO conversations (id, user_id, persona_id, title, model, message_count, created_at, updated_at)
    VALUES (:conversation_id, :user_id, :persona_id, :title, :label, :added, :asked_at, :answered_at)
    RETURNING id"""
_CONTINUE_PG = """
    UPDATE conversations SET message_count = message_count + :added, updated_at = :answered_at, model = :label
    WHERE id = :conversation_id{guard}
    RETURNING id"""


@lru_cache(maxsize=64)
def _statement_pg(new: bool, guarded: bool, count: int):
    """The one statement that stores an exchange of `count` messages (built once per shape)."""
    conversation = _NEW_CONVERSATION_PG if new else _CONTINUE_PG.format(
        guard=" AND message_count = :expected_count" if guarded else "")
    values = ",\n".join(_VALUES_PG.format(i=i) for i in range(count))
    return text(_EXCHANGE_PG.format(conversation=conversation, values=values))


def _parameters_pg(rows: list[dict]) -> dict:
    found = {}
    for i, row in enumerate(rows):
        for name, value in row.items():
            if name == "conversation_id":
                continue
            if name == "tool_calls" and value is not None:
                value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            found[f"{name}_{i}"] = value
    return found


def save_exchange(
    *,
    new: bool,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    persona_id: uuid.UUID | None,
    title: str,
    messages: list[NewMessage],
    provider: str,
    model: str,
    expected_count: int | None = None,
) -> bool:
    """Store an exchange's messages together, or nothing; returns whether they were stored.

    Nothing is stored when the conversation is gone, or (with `expected_count`) no longer
    holds that many messages: something else was added meanwhile.
    """
    label = f"{provider}/{model}"
    rows = [message.row(conversation_id) for message in messages]
    asked_at, answered_at = messages[0].created_at, messages[-1].created_at
    guarded = not new and expected_count is not None
    if db.engine.dialect.name == "postgresql":
        with _autocommit() as connection:
            inserted = connection.execute(_statement_pg(new, guarded, len(rows)), {
                "conversation_id": conversation_id, "user_id": user_id, "persona_id": persona_id,
                "title": title, "label": label, "asked_at": asked_at, "answered_at": answered_at,
                "added": len(rows), "expected_count": expected_count, **_parameters_pg(rows),
            })
            return inserted.rowcount > 0
    with db.engine.begin() as connection:
        if new:
            connection.execute(_conversations.insert().values(
                id=conversation_id, user_id=user_id, persona_id=persona_id, title=title, model=label,
                message_count=len(rows), created_at=asked_at, updated_at=answered_at,
            ))
        else:
            update = _conversations.update().where(_conversations.c.id == conversation_id)
            if guarded:
                update = update.where(_conversations.c.message_count == expected_count)
            updated = connection.execute(update.values(
                message_count=_conversations.c.message_count + len(rows), updated_at=answered_at, model=label))
            if updated.rowcount == 0:
                return False  # deleted (or added to) while the answer was being written
        connection.execute(_messages.insert().values(rows))
    return True
