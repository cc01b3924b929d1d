"""usage_events: queued in memory, written in batches, never lost to a deleted user or key."""

from __future__ import annotations

import uuid

from sqlalchemy import select, text

from gaia_app.runtime import usage as usage_module
from gaia_app.extensions import db
from gaia_app.models import UsageEvent
from gaia_app.state import gaia


def _event(user_id=None, api_key_id=None, **extra):
    event = dict(
        user_id=user_id, api_key_id=api_key_id, kind="chat", provider="local", model="gaia-local",
        stream=False, status="ok", prompt_tokens=3, completion_tokens=4, total_tokens=7,
        cost=0.0, latency_ms=1.5,
    )
    event.update(extra)
    return event


def _rows(app):
    with app.app_context():
        return db.session.execute(select(UsageEvent).order_by(UsageEvent.created_at)).scalars().all()


def test_events_are_written_in_one_batch_in_order(app, make):
    user_id = make.user()
    recorder = gaia(app).usage
    for tokens in range(5):
        recorder.record(**_event(user_id, prompt_tokens=tokens))
    assert _rows(app) == []  # nothing written until a flush
    assert recorder.flush() == 5
    rows = _rows(app)
    assert [row.prompt_tokens for row in rows] == [0, 1, 2, 3, 4]
    assert all(row.user_id == user_id for row in rows)
    assert recorder.flush() == 0


def test_an_event_of_a_deleted_user_or_key_is_kept_without_the_link(app, make):
    kept_user = make.user("kept@example.com")
    gone_user = make.user("gone@example.com")
    recorder = gaia(app).usage
    recorder.record(**_event(kept_user))
    recorder.record(**_event(gone_user, api_key_id=uuid.uuid4()))
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(text("DELETE FROM users WHERE email = 'gone@example.com'"))
    assert recorder.flush() == 2
    by_tokens = {row.user_id: row for row in _rows(app)}
    assert set(by_tokens) == {kept_user, None}
    assert by_tokens[None].api_key_id is None


def test_a_failed_write_keeps_the_events_for_the_next_flush(app, make, monkeypatch):
    user_id = make.user()
    recorder = gaia(app).usage
    recorder.record(**_event(user_id, prompt_tokens=1))
    recorder.record(**_event(user_id, prompt_tokens=2))

    def broken(*args, **kwargs):
        raise RuntimeError("database away")

    with monkeypatch.context() as patch:
        patch.setattr(usage_module, "insert", broken)
        try:
            recorder.flush()
        except RuntimeError:
            pass
        else:
            raise AssertionError("the flush should have failed")
    assert recorder.flush() == 2
    assert [row.prompt_tokens for row in _rows(app)] == [1, 2]


def test_the_queue_is_bounded(app, monkeypatch):
    monkeypatch.setattr(usage_module, "MAX_PENDING", 3)
    recorder = gaia(app).usage
    dropped_before = recorder.dropped
    for tokens in range(5):
        recorder.record(**_event(prompt_tokens=tokens))
    assert recorder.dropped - dropped_before == 2
    assert recorder.flush() == 3
    assert [row.prompt_tokens for row in _rows(app)] == [2, 3, 4]
