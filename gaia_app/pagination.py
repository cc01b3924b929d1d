"""Keyset pagination (`?limit=&cursor=`) over (created_at, id), stable under inserts."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from sqlalchemy import Select, and_, or_

from gaia_app.errors import InvalidField

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(created), uuid.UUID(row_id)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise InvalidField("cursor", "The cursor is not one this API gave out.", location="query") from None


def paginate(session, query: Select, model, limit: int | None, cursor: str | None):
    """Run `query` for one page; returns (rows, next_cursor or None)."""
    limit = min(max(limit or DEFAULT_LIMIT, 1), MAX_LIMIT)
    if cursor:
        created, row_id = decode_cursor(cursor)
        query = query.where(
            or_(model.created_at > created, and_(model.created_at == created, model.id > row_id))
        )
    rows = list(session.execute(query.order_by(model.created_at, model.id).limit(limit + 1)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return rows, next_cursor
