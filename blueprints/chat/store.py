"""The reads and writes of one chat exchange, in as few database round trips as they allow.

Every chat request reads a persona (and a conversation's history) before the provider call
and writes two messages after it; between the two it holds no connection, since the call may
take seconds. Reads run outside a transaction (one round trip each). On PostgreSQL the write
is a single statement (the conversation row and both messages, atomic by itself); on SQLite,
where the database is in-process, it is a short transaction.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, bindparam, func, literal, or_, select, text, true

from gaia_app.extensions import db
from gaia_app.models import DEFAULT_PERSONA_ID, Conversation, Message, Persona, UserPersonaPreference
from gaia_app.providers.base import ChatMessage
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


# Built once: a chat request only binds values to them.
_PERSONA_COLUMNS = (Persona.id, Persona.system_prompt)
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
    select(_messages.c.role, _messages.c.content, _messages.c.created_at, _messages.c.id)
    .where(_messages.c.conversation_id == bindparam("conversation_id"))
    .order_by(_messages.c.created_at.desc(), _messages.c.id.desc())
    .limit(bindparam("history", type_=Integer))
    .subquery()
)
_HISTORY = (
    select(_conversations.c.persona_id, _NEWEST.c.role, _NEWEST.c.content)
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


def read_context(
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    persona_id: uuid.UUID | None,
    history: int,
):
    """What a chat needs before the provider call, on one connection:

    - the conversation's history (its last `history` messages, oldest first), if one is
      named; None for the whole result when it is not the user's (or does not exist);
    - the persona: the requested one if the user may see it (else None), otherwise the
      conversation's, else the user's chosen one, else the default.

    Returns None (no such conversation) or (PersonaChoice | None, history).
    """
    turns: list[ChatMessage] = []
    conversation_persona = None
    cache = persona_cache()
    if conversation_id is None:
        persona = cache.get((user_id, persona_id, None))
        if persona is not _MISSING:
            return persona, turns
    generation = cache.generation
    with _autocommit() as connection:
        if conversation_id is not None:
            rows = connection.execute(
                _HISTORY, {"conversation_id": conversation_id, "user_id": user_id, "history": max(history, 1)}
            ).all()
            if not rows:
                return None
            conversation_persona = rows[0].persona_id
            if history > 0:
                turns = [ChatMessage(row.role, row.content) for row in reversed(rows) if row.role is not None]
        key = (user_id, persona_id, conversation_persona)
        persona = cache.get(key)
        if persona is _MISSING:
            if persona_id is not None:
                row = connection.execute(_VISIBLE_PERSONA, {"persona_id": persona_id, "user_id": user_id}).first()
            else:
                row = connection.execute(
                    _CHOSEN_PERSONA, {"fallback": conversation_persona, "user_id": user_id}
                ).first()
            persona = PersonaChoice(row.id, row.system_prompt) if row else None
            cache.put(key, persona, _persona_ttl(), generation)
    return persona, turns


# PostgreSQL: the conversation row and both messages in one atomic statement. When continuing,
# the messages are only added if the conversation still exists (it may have been deleted
# while the answer was being written).
_EXCHANGE_PG = """
WITH conversation AS ({conversation})
INSERT INTO messages (id, conversation_id, role, content, provider, model, prompt_tokens, completion_tokens, created_at)
SELECT v.id, conversation.id, v.role, v.content, v.provider, v.model, v.prompt_tokens, v.completion_tokens, v.created_at
FROM conversation, (VALUES
    (CAST(:user_message_id AS uuid), 'user', CAST(:question AS text), CAST(NULL AS varchar), CAST(NULL AS varchar), CAST(NULL AS integer), CAST(NULL AS integer), CAST(:asked_at AS timestamptz)),
    (CAST(:answer_id AS uuid), 'assistant', CAST(:answer AS text), CAST(:provider AS varchar), CAST(:model AS varchar), CAST(:prompt_tokens AS integer), CAST(:completion_tokens AS integer), CAST(:answered_at AS timestamptz))
) AS v (id, role, content, provider, model, prompt_tokens, completion_tokens, created_at)
"""
_NEW_PG = text(_EXCHANGE_PG.format(conversation="""
    INSERT INTO conversations (id, user_id, persona_id, title, model, message_count, created_at, updated_at)
    VALUES (:conversation_id, :user_id, :persona_id, :title, :label, 2, :asked_at, :answered_at)
    RETURNING id"""))
_CONTINUE_PG = text(_EXCHANGE_PG.format(conversation="""
    UPDATE conversations SET message_count = message_count + 2, updated_at = :answered_at, model = :label
    WHERE id = :conversation_id
    RETURNING id"""))


def save_exchange(
    *,
    new: bool,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    persona_id: uuid.UUID | None,
    title: str,
    question: str,
    asked_at: datetime,
    answer: str,
    answered_at: datetime,
    provider: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    """Store the user's message and the answer together, or nothing."""
    label = f"{provider}/{model}"
    if db.engine.dialect.name == "postgresql":
        with _autocommit() as connection:
            connection.execute(_NEW_PG if new else _CONTINUE_PG, {
                "conversation_id": conversation_id, "user_id": user_id, "persona_id": persona_id,
                "title": title, "label": label, "asked_at": asked_at, "answered_at": answered_at,
                "user_message_id": uuid.uuid4(), "question": question, "answer_id": uuid.uuid4(),
                "answer": answer, "provider": provider, "model": model,
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            })
        return
    with db.engine.begin() as connection:
        if new:
            connection.execute(_conversations.insert().values(
                id=conversation_id, user_id=user_id, persona_id=persona_id, title=title, model=label,
                message_count=2, created_at=asked_at, updated_at=answered_at,
            ))
        else:
            updated = connection.execute(
                _conversations.update()
                .where(_conversations.c.id == conversation_id)
                .values(message_count=_conversations.c.message_count + 2, updated_at=answered_at, model=label)
            )
            if updated.rowcount == 0:
                return  # deleted while the answer was being written: nothing to add to
        connection.execute(_messages.insert().values([
            {"id": uuid.uuid4(), "conversation_id": conversation_id, "role": "user", "content": question,
             "provider": None, "model": None, "prompt_tokens": None, "completion_tokens": None,
             "created_at": asked_at},
            {"id": uuid.uuid4(), "conversation_id": conversation_id, "role": "assistant", "content": answer,
             "provider": provider, "model": model, "prompt_tokens": prompt_tokens,
             "completion_tokens": completion_tokens, "created_at": answered_at},
        ]))
