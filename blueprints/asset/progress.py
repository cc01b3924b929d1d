"""A job's progress as server-sent events (`GET /jobs/<id>/events`).

The stream reads the job's row every POLL_INTERVAL seconds, each time in a short session of
its own that gives its connection back at once: a client following a job for minutes holds
no database connection between polls. It sends

- `event: progress` with the job's JSON (as `GET /jobs/<id>` answers) when the stream opens
  and whenever the job changes;
- `: keepalive` comments when nothing was sent for KEEPALIVE_INTERVAL seconds, so proxies
  keep the connection open;
- one final event named after the job's last status (`succeeded`, `failed`, `cancelled`),
  with the job's JSON, and the stream ends; a job already finished gets it at once;
- `event: deleted` if the job disappears (its asset was deleted), and the stream ends.

A stream lasts at most MAX_STREAM_SECONDS; it then ends with a `: reconnect` comment, and a
client that still waits opens it again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

from blueprints.asset.schemas import FINISHED_STATUSES, JobSchema
from gaia_app.extensions import db
from gaia_app.models import AssetJob

POLL_INTERVAL = 0.25
KEEPALIVE_INTERVAL = 15.0
MAX_STREAM_SECONDS = 3600.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

KEEPALIVE = b": keepalive\n\n"
RECONNECT = b": reconnect to follow the job further\n\n"
_JOB = JobSchema()


def sse_event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _read_job(app, user_id: uuid.UUID, job_id: uuid.UUID) -> dict | None:
    """The job's JSON, read in a session that is closed (its connection given back) at once."""
    with app.app_context():
        try:
            job = db.session.execute(
                db.select(AssetJob).where(AssetJob.id == job_id, AssetJob.user_id == user_id)
            ).scalar_one_or_none()
            return None if job is None else _JOB.dump(job)
        finally:
            db.session.remove()


def job_events(
    app, user_id: uuid.UUID, job_id: uuid.UUID, *, first: dict,
    monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> Iterator[bytes]:
    """The SSE body for a job whose JSON (`first`) the route has just read."""
    poll, keepalive, limit = POLL_INTERVAL, KEEPALIVE_INTERVAL, MAX_STREAM_SECONDS
    started = last_sent = monotonic()
    view = first
    if view["status"] in FINISHED_STATUSES:
        yield sse_event(view["status"], view)
        return
    yield sse_event("progress", view)
    while monotonic() - started < limit:
        sleep(poll)
        current = _read_job(app, user_id, job_id)
        if current is None:
            yield sse_event("deleted", {"id": str(job_id)})
            return
        if current["status"] in FINISHED_STATUSES:
            yield sse_event(current["status"], current)
            return
        if current != view:
            view = current
            last_sent = monotonic()
            yield sse_event("progress", view)
        elif monotonic() - last_sent >= keepalive:
            last_sent = monotonic()
            yield KEEPALIVE
    yield RECONNECT
