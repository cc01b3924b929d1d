"""What an operator or a user does to a job from outside its runner: cancel it. The API
(`blueprints/asset/jobs.py`) and the CLI (`gaia_app/jobs/cli.py`) both call this one rule.

Every change is a conditional UPDATE on the job's status, so a cancel racing a worker never
turns a finished job back; a row that moved in between is read again and the rule applied
to what it has become.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import InvalidRequestError

from gaia_app.errors import Conflict, NotFound
from gaia_app.extensions import db
from gaia_app.models import Asset, AssetJob

CANCELLED_ERROR = "Cancelled before it started."
# Each try either moves the job or finds that a worker just did; a few always settle it.
CANCEL_TRIES = 4


class JobFinished(Conflict):
    """The job is over (succeeded, failed or cancelled): there is nothing to cancel."""


def cancel(job: AssetJob, now: datetime) -> bool:
    """Cancel `job`: a queued one at once (its asset fails), True; a running one is asked to
    stop (its runner does at its next step), False. `JobFinished` for a job that is over,
    `Conflict` if it kept changing, `NotFound` if it was deleted meanwhile. Flushes; the
    caller commits."""
    for _ in range(CANCEL_TRIES):
        if job.status == "queued" and _moved(
            job, "queued", status="cancelled", cancel_requested=True, finished_at=now,
            error=CANCELLED_ERROR, error_kind="cancelled", updated_at=now,
        ):
            db.session.execute(
                update(Asset).where(Asset.id == job.asset_id, Asset.status == "pending")
                .values(status="failed", updated_at=now).execution_options(synchronize_session=False)
            )
            _reload(job)
            return True
        if job.status == "running" and _moved(job, "running", cancel_requested=True, updated_at=now):
            _reload(job)
            return False
        if job.status not in ("queued", "running"):
            raise JobFinished(f"Job {job.id} is already {job.status}; only a queued or running job "
                              "can be cancelled.", job_status=job.status)
        _reload(job)  # a worker moved it meanwhile: look again
    raise Conflict(f"Job {job.id} kept changing while it was being cancelled; try again.",
                   job_status=job.status)


def _moved(job: AssetJob, was: str, **values: Any) -> bool:
    """Set `values` on the job if it still has status `was`; whether it did."""
    result = db.session.execute(
        update(AssetJob).where(AssetJob.id == job.id, AssetJob.status == was).values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _reload(job: AssetJob) -> None:
    try:
        db.session.refresh(job)
    except InvalidRequestError:
        raise NotFound(f"No job {job.id}: it was deleted meanwhile.") from None
