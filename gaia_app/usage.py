"""`usage_events`: one row per chat request, written in batches so no request waits for it."""

from __future__ import annotations

import logging
import uuid
from collections import deque

from flask import Flask
from sqlalchemy import insert

from gaia_app.batching import BackgroundBatcher
from gaia_app.extensions import db
from gaia_app.models import UsageEvent, utcnow

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
                with db.engine.begin() as connection:
                    connection.execute(insert(UsageEvent), batch)
        except Exception:
            # Back to the front of the queue, in order, so an outage loses nothing.
            self._pending.extendleft(reversed(batch))
            raise
        return len(batch) + (self.flush() if self._pending else 0)
