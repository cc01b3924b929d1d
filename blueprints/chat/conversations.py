"""Stored conversations: each belongs to one user, and nobody else can tell it exists.

Writes flush; the route commits (the chat exchange itself is stored by `store`)."""

from __future__ import annotations

import uuid

from sqlalchemy import and_, or_

from blueprints.chat.personas import current_persona, get_visible_persona
from gaia_app.errors import NotFound
from gaia_app.extensions import db, first_or_404
from gaia_app.models import Conversation, Message
from gaia_app.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor

DEFAULT_MESSAGE_LIMIT = 100
MAX_MESSAGE_LIMIT = 500


def list_conversations(
    user_id: uuid.UUID, limit: int | None = None, cursor: str | None = None
) -> tuple[list[Conversation], str | None]:
    """One page of the user's conversations, newest first; returns (rows, next_cursor).

    The same keyset cursor as `gaia_app.pagination.paginate`, walked the other way: that
    helper only pages oldest first.
    """
    limit = min(max(limit or DEFAULT_LIMIT, 1), MAX_LIMIT)
    query = db.select(Conversation).where(Conversation.user_id == user_id)
    if cursor:
        created, row_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Conversation.created_at < created,
                and_(Conversation.created_at == created, Conversation.id < row_id),
            )
        )
    query = query.order_by(Conversation.created_at.desc(), Conversation.id.desc()).limit(limit + 1)
    rows = list(db.session.execute(query).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, next_cursor


def create_conversation(
    user_id: uuid.UUID, title: str | None = None, persona_id: uuid.UUID | str | None = None
) -> Conversation:
    """A new, empty conversation with the named persona, or the user's current one."""
    if persona_id is not None:
        persona = get_visible_persona(user_id, persona_id)
    else:
        persona, _ = current_persona(user_id)
    conversation = Conversation(
        user_id=user_id, title=(title or "").strip(), persona_id=persona.id, message_count=0
    )
    db.session.add(conversation)
    db.session.flush()
    return conversation


def get_conversation(user_id: uuid.UUID, conversation_id: uuid.UUID | str) -> Conversation:
    return first_or_404(
        lambda parsed: db.select(Conversation).where(Conversation.id == parsed, Conversation.user_id == user_id),
        conversation_id, NotFound(f"No conversation {conversation_id} among yours."))[0]


def conversation_messages(
    conversation: Conversation, limit: int | None = None
) -> tuple[list[Message], bool]:
    """The latest `limit` messages in the order they were said, and whether older ones exist."""
    limit = min(max(limit or DEFAULT_MESSAGE_LIMIT, 1), MAX_MESSAGE_LIMIT)
    latest = list(
        db.session.execute(
            db.select(Message)
            .where(Message.conversation_id == conversation.id)
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(limit + 1)
        ).scalars()
    )
    has_more = len(latest) > limit
    return latest[:limit][::-1], has_more


def delete_conversation(user_id: uuid.UUID, conversation_id: uuid.UUID | str) -> None:
    """Delete a conversation; its messages go with it (ON DELETE CASCADE)."""
    conversation = get_conversation(user_id, conversation_id)
    db.session.delete(conversation)
    db.session.flush()
