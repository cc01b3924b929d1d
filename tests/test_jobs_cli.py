"""`flask --app wsgi jobs list | show | retry | cancel | sweep` on SQLite and PostgreSQL,
through Flask's CLI runner, with job rows written straight into the database.

Sending a job to a runner is `gaia().assets.dispatch`, tested with the dispatcher; here it is
replaced by a recorder that also reads the job's row through a session of its own, to show
the row was committed before the job was sent.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from gaia_app.extensions import db
from gaia_app.models import Asset, AssetJob
from gaia_app.state import gaia

NOW = datetime.now(timezone.utc).replace(microsecond=0)
ASSET_STATUS_OF = {"queued": "pending", "running": "pending", "succeeded": "ready",
                   "failed": "failed", "cancelled": "failed"}


def invoke(runner, *args):
    return runner.invoke(args=["jobs", *args])


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def refused(result, *, code: int = 1):
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def make_job(app, user_id: uuid.UUID, status: str = "queued", *, created_ago: float = 0.0,
             **fields) -> tuple[uuid.UUID, uuid.UUID]:
    """A job in `status` and its asset (in the status that goes with it): (job id, asset id)."""
    created = NOW - timedelta(seconds=created_ago)
    with app.app_context():
        asset = Asset(user_id=user_id, category="image", format="png", description="a red fox",
                      provider="builtin", status=ASSET_STATUS_OF[status], details={},
                      created_at=created, updated_at=created)
        db.session.add(asset)
        db.session.flush()
        values = {"progress": 0, "attempts": 0, "max_attempts": 3, "cancel_requested": False,
                  "request": {"category": "image", "description": "a red fox", "seed": 7,
                              "provider": "builtin"},
                  "created_at": created, "updated_at": created, "dispatched_at": created}
        if status in ("failed", "cancelled"):
            values.update(attempts=3, progress=60, error="The generator gave up.", error_kind="upstream",
                          started_at=created, finished_at=created + timedelta(seconds=5),
                          not_before=created, cancel_requested=status == "cancelled")
        if status == "running":
            values.update(attempts=1, progress=40, started_at=created, lease_owner="worker-1",
                          lease_expires_at=NOW + timedelta(minutes=1))
        values.update(fields)
        job = AssetJob(asset_id=asset.id, user_id=user_id, status=status, **values)
        db.session.add(job)
        db.session.commit()
        return job.id, asset.id


def job_row(app, job_id: uuid.UUID) -> AssetJob:
    with app.app_context():
        row = db.session.get(AssetJob, job_id)
        db.session.expunge(row)
        return row


def asset_status(app, asset_id: uuid.UUID) -> str:
    with app.app_context():
        return db.session.get(Asset, asset_id).status


@pytest.fixture
def player(make) -> uuid.UUID:
    return make.user("player@example.com")


@pytest.fixture
def dispatched(app, monkeypatch) -> list[tuple[str, str]]:
    """(job id, the job's committed status at that moment) for each job sent to a runner."""
    sent: list[tuple[str, str]] = []

    def record(job_id, *, delay: float = 0.0) -> None:
        with app.app_context():  # a session of its own: it sees only what was committed
            status = db.session.execute(
                select(AssetJob.status).where(AssetJob.id == uuid.UUID(str(job_id)))
            ).scalar_one()
        sent.append((str(job_id), status))

    monkeypatch.setattr(gaia(app).assets, "dispatch", record)
    return sent


# --------------------------------------------------------------------------- list


def _rows(result) -> dict[str, list[str]]:
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["id", "status", "progress", "attempts", "category", "provider",
                                "user", "created_at", "error"]
    return {line.split()[0]: line.split(None, 8) for line in lines[1:]}


def test_list_shows_jobs_newest_first_with_their_facts(app, runner, make, player):
    other = make.user("other@example.com")
    failed, _ = make_job(app, player, "failed", created_ago=30, error="line one\nline two " + "x" * 100)
    running, _ = make_job(app, other, "running", created_ago=20)
    queued, _ = make_job(app, player, "queued", created_ago=10)

    result = ok(invoke(runner, "list"))
    rows = _rows(result)
    assert list(rows) == [str(queued), str(running), str(failed)]
    assert rows[str(running)][1:8] == ["running", "40%", "1/3", "image", "builtin", "other@example.com",
                                       (NOW - timedelta(seconds=20)).isoformat()]
    assert rows[str(queued)][8] == "-"
    error = rows[str(failed)][8]
    assert error.startswith("line one line two xxx") and error.endswith("...") and len(error) == 60


def test_list_filters_by_status_user_and_limit(app, runner, make, player):
    other = make.user("other@example.com")
    mine_failed, _ = make_job(app, player, "failed", created_ago=30)
    mine_queued, _ = make_job(app, player, "queued", created_ago=20)
    theirs, _ = make_job(app, other, "failed", created_ago=10)

    assert list(_rows(ok(invoke(runner, "list", "--status", "failed")))) == [str(theirs), str(mine_failed)]
    assert list(_rows(ok(invoke(runner, "list", "--user", "PLAYER@example.com")))) == [
        str(mine_queued), str(mine_failed)]
    assert list(_rows(ok(invoke(runner, "list", "--user", "player@example.com", "--status", "queued")))) == [
        str(mine_queued)]
    assert list(_rows(ok(invoke(runner, "list", "--limit", "1")))) == [str(theirs)]
    assert ok(invoke(runner, "list", "--status", "running")).stdout.strip() == "No jobs."

    assert "no user with email ghost@gaia.dev" in refused(invoke(runner, "list", "--user", "ghost@gaia.dev")).output
    refused(invoke(runner, "list", "--status", "lost"), code=2)
    refused(invoke(runner, "list", "--limit", "0"), code=2)


def test_list_without_jobs(runner):
    assert ok(invoke(runner, "list")).stdout.strip() == "No jobs."


# --------------------------------------------------------------------------- show


def test_show_prints_every_field_of_the_job_and_its_asset(app, runner, player):
    job_id, asset_id = make_job(app, player, "failed", error="The generator gave up.\nAfter 3 tries.")
    lines = ok(invoke(runner, "show", str(job_id))).stdout.splitlines()
    assert lines[0] == f"Job {job_id} (player@example.com)"
    continued = lines.index(" " * 21 + "After 3 tries.")  # stays under its value
    assert lines[continued - 1].split(None, 1) == ["error:", "The generator gave up."]
    del lines[continued]
    asset_at = lines.index(f"Asset {asset_id}")
    job_fields = dict(line.split(None, 1) for line in lines[1:asset_at])
    asset_fields = dict(line.split(None, 1) for line in lines[asset_at + 1:])
    assert set(job_fields) == {f"{column.key}:" for column in AssetJob.__table__.columns}
    assert set(asset_fields) == {f"{column.key}:" for column in Asset.__table__.columns}
    assert job_fields["status:"] == "failed"
    assert job_fields["error:"] == "The generator gave up."
    assert job_fields["lease_owner:"] == "-"
    assert json.loads(job_fields["request:"])["seed"] == 7
    assert asset_fields["status:"] == "failed"
    assert asset_fields["description:"] == "a red fox"


def test_show_as_json(app, runner, player):
    job_id, asset_id = make_job(app, player, "running")
    shown = json.loads(ok(invoke(runner, "show", str(job_id).upper(), "--json")).stdout)
    assert shown["user_email"] == "player@example.com"
    assert shown["job"]["id"] == str(job_id) and shown["asset"]["id"] == str(asset_id)
    assert set(shown["job"]) == {column.key for column in AssetJob.__table__.columns}
    assert shown["job"]["request"] == {"category": "image", "description": "a red fox", "seed": 7,
                                       "provider": "builtin"}
    assert shown["job"]["lease_owner"] == "worker-1" and shown["job"]["error"] is None
    assert datetime.fromisoformat(shown["job"]["created_at"]) == NOW
    assert shown["asset"]["details"] == {} and shown["asset"]["status"] == "pending"


@pytest.mark.parametrize("command", ["show", "retry", "cancel"])
@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-uuid", "42", ""])
def test_unknown_or_malformed_job_id(runner, dispatched, command, job_id):
    result = refused(invoke(runner, command, job_id))
    assert "no job with id" in result.output
    assert dispatched == []


# --------------------------------------------------------------------------- retry


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_retry_queues_the_job_again_and_sends_it_once_committed(app, runner, player, dispatched, status):
    job_id, asset_id = make_job(app, player, status)
    result = ok(invoke(runner, "retry", str(job_id)))
    assert f"Job {job_id} queued again (it was {status})." in result.output

    job = job_row(app, job_id)
    assert (job.status, job.attempts, job.progress, job.error, job.error_kind) == ("queued", 0, 0, None, None)
    assert job.cancel_requested is False
    assert job.not_before is None and job.lease_owner is None and job.lease_expires_at is None
    assert job.started_at is None and job.finished_at is None
    assert job.dispatched_at > NOW - timedelta(seconds=1)
    assert job.max_attempts == 3 and job.request["seed"] == 7  # what was asked stays
    assert asset_status(app, asset_id) == "pending"
    assert dispatched == [(str(job_id), "queued")]


@pytest.mark.parametrize("status", ["queued", "running", "succeeded"])
def test_retry_refuses_a_job_that_did_not_fail(app, runner, player, dispatched, status):
    job_id, asset_id = make_job(app, player, status)
    before = job_row(app, job_id)
    result = refused(invoke(runner, "retry", str(job_id)))
    assert f"job {job_id} is {status}; only a failed or cancelled job can be retried" in result.output
    after = job_row(app, job_id)
    assert (after.status, after.attempts, after.updated_at) == (before.status, before.attempts, before.updated_at)
    assert asset_status(app, asset_id) == ASSET_STATUS_OF[status]
    assert dispatched == []


def test_a_failed_dispatch_leaves_the_job_queued_for_the_sweeper(app, runner, player, monkeypatch):
    def broker_down(job_id, *, delay: float = 0.0) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(gaia(app).assets, "dispatch", broker_down)
    job_id, _ = make_job(app, player, "failed")
    result = ok(invoke(runner, "retry", str(job_id)))
    assert "could not be sent now (broker unreachable)" in result.stderr
    assert job_row(app, job_id).status == "queued"


# --------------------------------------------------------------------------- cancel


def test_cancel_a_queued_job_at_once(app, runner, player, dispatched):
    job_id, asset_id = make_job(app, player, "queued")
    assert f"Cancelled job {job_id} (it was queued)." in ok(invoke(runner, "cancel", str(job_id))).output
    job = job_row(app, job_id)
    assert (job.status, job.cancel_requested, job.error_kind) == ("cancelled", True, "cancelled")
    assert job.error == "Cancelled before it started." and job.finished_at is not None
    assert asset_status(app, asset_id) == "failed"
    # Cancelled is finished: a second cancel is refused, and a retry brings it back.
    assert "already cancelled" in refused(invoke(runner, "cancel", str(job_id))).output
    ok(invoke(runner, "retry", str(job_id)))
    assert job_row(app, job_id).status == "queued" and dispatched == [(str(job_id), "queued")]


def test_cancel_a_running_job_asks_its_runner_to_stop(app, runner, player):
    job_id, asset_id = make_job(app, player, "running")
    assert f"Asked job {job_id} to stop" in ok(invoke(runner, "cancel", str(job_id))).output
    job = job_row(app, job_id)
    assert (job.status, job.cancel_requested, job.lease_owner) == ("running", True, "worker-1")
    assert asset_status(app, asset_id) == "pending"
    assert "already asked to stop" in ok(invoke(runner, "cancel", str(job_id))).output


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_cancel_refuses_a_finished_job(app, runner, player, status):
    job_id, asset_id = make_job(app, player, status)
    before = job_row(app, job_id)
    result = refused(invoke(runner, "cancel", str(job_id)))
    assert f"job {job_id} is already {status}" in result.output
    after = job_row(app, job_id)
    assert (after.status, after.cancel_requested, after.updated_at) == (
        before.status, before.cancel_requested, before.updated_at)
    assert asset_status(app, asset_id) == ASSET_STATUS_OF[status]


# --------------------------------------------------------------------------- sweep


def test_sweep_sends_again_only_what_is_due(app, runner, player, dispatched):
    lost, _ = make_job(app, player, "queued", dispatched_at=NOW - timedelta(days=1))
    fresh, _ = make_job(app, player, "queued", dispatched_at=datetime.now(timezone.utc))
    abandoned, _ = make_job(app, player, "running", lease_expires_at=NOW - timedelta(minutes=5),
                            dispatched_at=NOW - timedelta(days=1))
    make_job(app, player, "failed", dispatched_at=NOW - timedelta(days=1))

    result = ok(invoke(runner, "sweep"))
    assert sorted(job_id for job_id, _ in dispatched) == sorted([str(lost), str(abandoned)])
    assert f"Sent job {lost} again." in result.output
    dispatched.clear()
    assert "No jobs to send again." in ok(invoke(runner, "sweep")).output  # marked as sent
    ok(invoke(runner, "sweep", "--all-queued"))
    assert sorted(job_id for job_id, _ in dispatched) == sorted([str(lost), str(fresh)])
