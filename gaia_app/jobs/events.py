"""Platform events of asset generation, through one publisher.

`asset.generation.started`, `.progress`, `.completed` and `.failed`, each a JSON object with
`job_id`, `asset_id`, `user_id` and what the event says (progress, error, file facts). With
NATS_URL they go to NATS (`gaia_app.jobs.nats_events`); otherwise to the log, so that a
deployment without NATS still shows them.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

log = logging.getLogger("gaia.events")

STARTED = "asset.generation.started"
PROGRESS = "asset.generation.progress"
COMPLETED = "asset.generation.completed"
FAILED = "asset.generation.failed"


class EventPublisher(Protocol):
    def publish(self, subject: str, payload: dict[str, Any]) -> None:
        """Send one event. Never raises: events inform, they do not decide a job's fate."""

    def close(self) -> None:
        """Send what is pending and let go of connections."""


class LogPublisher:
    def publish(self, subject: str, payload: dict[str, Any]) -> None:
        log.info("%s %s", subject, json.dumps(payload, separators=(",", ":"), default=str))

    def close(self) -> None:
        return None


def publisher_for(nats_url: str | None) -> EventPublisher:
    if not nats_url:
        return LogPublisher()
    from gaia_app.jobs.nats_events import NatsPublisher

    return NatsPublisher(nats_url)
