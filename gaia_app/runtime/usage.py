"""`usage_events`: one row per chat request, written in batches so no request waits for it."""

from __future__ import annotations

import logging
import uuid
from collections import deque

from flask import Flask
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from gaia_app.runtime.batching import BackgroundBatcher
from gaia_app.extensions import db
from gaia_app.models import ApiKey, UsageEvent, User, utcnow

log = logging.getLogger(__name__)

# Kept in memory while the database is away; beyond this the oldest are dropped (and logged).
MAX_PENDING = 50_000


class UsageRecorder(BackgroundBatcher):
    purpose = "record usage"

    def __init__(self, app: Flask, interval: float) -> None:
        super().__init__(app, interval)
        self._pending: deque[dict] = deque()
        self.dropped = 0

    def record(self, **event) -> None:
        """Queue one event (the columns of UsageEvent); id and created_at are filled in."""
        event.setdefault("id", uuid.uuid4())
        event.setdefault("created_at", utcnow())
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("usage events are piling up unwritten; %d dropped so far", self.dropped)
        self._pending.append(event)
        self._ensure_thread()

    def flush(self) -> int:
        batch = []
        while self._pending and len(batch) < 5000:
            batch.append(self._pending.popleft())
        if not batch:
            return 0
        try:
            with self._app.app_context():
                try:
                    with db.engine.begin() as connection:
                        connection.execute(insert(UsageEvent), batch)
                except IntegrityError:
                    # A user or key deleted since the request: keep the event, without the link.
                    with db.engine.begin() as connection:
                        connection.execute(insert(UsageEvent), _unlink_missing(connection, batch))
        except Exception:
            # Back to the front of the queue, in order, so an outage loses nothing.
            self._pending.extendleft(reversed(batch))
            raise
        return len(batch) + (self.flush() if self._pending else 0)


def _unlink_missing(connection, batch: list[dict]) -> list[dict]:
    users = {row["user_id"] for row in batch if row.get("user_id")}
    keys = {row["api_key_id"] for row in batch if row.get("api_key_id")}
    found_users = set(connection.execute(select(User.id).where(User.id.in_(users))).scalars()) if users else set()
    found_keys = set(connection.execute(select(ApiKey.id).where(ApiKey.id.in_(keys))).scalars()) if keys else set()
    fixed = []
    for row in batch:
        row = dict(row)
        if row.get("user_id") not in found_users:
            row["user_id"] = None
        if row.get("api_key_id") not in found_keys:
            row["api_key_id"] = None
        fixed.append(row)
    return fixed
