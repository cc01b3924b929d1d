"""`api_keys.last_used_at`, collected in memory and written in one batched UPDATE every
`LAST_USED_FLUSH_INTERVAL` seconds (and at exit), so that no request ever writes for it."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

from flask import Flask
from sqlalchemy import or_, update

from gaia_app.extensions import db
from gaia_app.models import ApiKey
from gaia_app.runtime.batching import BackgroundBatcher


class LastUsedRecorder(BackgroundBatcher):
    purpose = "record API key use"

    def __init__(self, app: Flask, interval: float) -> None:
        super().__init__(app, interval)
        self._pending: dict[uuid.UUID, float] = {}

    def touch(self, key_id: uuid.UUID) -> None:
        self._pending[key_id] = time.time()
        self._ensure_thread()

    def flush(self) -> int:
        """Write what has been collected; returns the number of keys written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        rows = [
            {"key_id": key_id, "used_at": datetime.fromtimestamp(ts, timezone.utc)}
            for key_id, ts in pending.items()
        ]
        statement = (
            update(ApiKey)
            .where(
                ApiKey.id == db.bindparam("key_id"),
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < db.bindparam("used_at")),
            )
            .values(last_used_at=db.bindparam("used_at"))
        )
        try:
            with self._app.app_context():
                with db.engine.begin() as connection:
                    connection.execute(statement, rows)
        except Exception:
            # Put them back (newer touches win) so that an outage loses nothing.
            for key_id, ts in pending.items():
                self._pending.setdefault(key_id, ts)
            raise
        return len(rows)
