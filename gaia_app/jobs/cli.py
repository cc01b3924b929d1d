"""Operator commands for generation jobs: `flask --app wsgi jobs list | show | retry | cancel | sweep`.

Like the runners, these move a job only by conditional UPDATEs on its row (WHERE the status
is still the one they saw), so a command racing a worker never turns a finished job back.
A retried job is committed before it is sent to a runner; without REDIS_URL the runner is a
thread of this very process, and the command ends once that job has run.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import click
from flask.cli import AppGroup
from sqlalchemy import inspect, select, update
from sqlalchemy.exc import InvalidRequestError

from gaia_app import accounts
from gaia_app.cli_errors import database_command, fail
from gaia_app.errors import APIError
from gaia_app.extensions import db
from gaia_app.jobs import control
from gaia_app.models import Asset, AssetJob, User
from gaia_app.state import gaia

jobs_cli = AppGroup("jobs", help="List, inspect, retry, cancel and sweep asset generation jobs.")

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
RETRYABLE = ("failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
LIST_ERROR_CHARS = 60


def _job_or_fail(job_id: str) -> AssetJob:
    try:
        parsed = uuid.UUID(job_id.strip())
    except ValueError:
        fail(f"no job with id {job_id!r} (a job id is a UUID; see `jobs list`)")
    job = db.session.get(AssetJob, parsed)
    if job is None:
        fail(f"no job with id {parsed}")
    return job


def _read_again(job: AssetJob) -> None:
    """Read the job's row again (a worker may have moved it); gone means deleted meanwhile."""
    try:
        db.session.refresh(job)
    except InvalidRequestError:
        fail(f"no job with id {job.id} (it was deleted meanwhile)")


def _moved(job_id: uuid.UUID, was: tuple[str, ...], **values: Any) -> bool:
    """Set `values` on the job if its status is still one of `was`; whether it did."""
    result = db.session.execute(
        update(AssetJob).where(AssetJob.id == job_id, AssetJob.status.in_(was)).values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return str(value)


def _field_line(name: str, value: Any) -> str:
    # Continuation lines (an error's traceback, a long description) stay under their value.
    return f"  {name + ':':<18} " + _shown(value).replace("\n", "\n" + " " * 21)


def _json_value(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _one_line(text: str | None, limit: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _columns(row: db.Model) -> dict[str, Any]:
    """Every column of `row`, by attribute name, in the table's order."""
    return {column.key: getattr(row, column.key) for column in inspect(type(row)).column_attrs}


# -- reading ------------------------------------------------------------------------------


@jobs_cli.command("list", with_appcontext=False)
@database_command
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only jobs in this status.")
@click.option("--user", "email", default=None, help="Only this user's jobs (their email).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def list_jobs_command(status: str | None, email: str | None, limit: int) -> None:
    """List jobs, newest first."""
    query = (
        select(AssetJob, Asset, User.email)
        .join(Asset, Asset.id == AssetJob.asset_id)
        .join(User, User.id == AssetJob.user_id)
        .order_by(AssetJob.created_at.desc(), AssetJob.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(AssetJob.status == status)
    if email:
        try:
            user = accounts.find_user_by_email(email)
        except APIError as exc:
            fail(exc.detail)
        if user is None:
            fail(f"no user with email {email.strip().lower()}")
        query = query.where(AssetJob.user_id == user.id)
    rows = db.session.execute(query).all()
    if not rows:
        click.echo("No jobs.")
        return
    click.echo(f"{'id':<36}  {'status':<9} {'progress':>8} {'attempts':>8}  {'category':<8} "
               f"{'provider':<12} {'user':<30} {'created_at':<25} error")
    for job, asset, user_email in rows:
        click.echo(
            f"{job.id}  {job.status:<9} {f'{job.progress}%':>8} "
            f"{f'{job.attempts}/{job.max_attempts}':>8}  {asset.category:<8} {asset.provider:<12} "
            f"{user_email:<30} {_shown(job.created_at):<25} {_one_line(job.error, LIST_ERROR_CHARS)}"
        )


@jobs_cli.command("show", with_appcontext=False)
@database_command
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
def show_job_command(job_id: str, as_json: bool) -> None:
    """Every field of one job and of its asset."""
    job = _job_or_fail(job_id)
    asset = db.session.get(Asset, job.asset_id)
    user = db.session.get(User, job.user_id)
    sections = {
        "job": _columns(job),
        "asset": _columns(asset) if asset is not None else None,
        "user_email": user.email if user is not None else None,
    }
    if as_json:
        click.echo(json.dumps(sections, indent=2, default=_json_value))
        return
    click.echo(f"Job {job.id} ({user.email if user is not None else 'no user'})")
    for name, value in sections["job"].items():
        click.echo(_field_line(name, value))
    if asset is None:
        click.echo("Asset: none")
        return
    click.echo(f"Asset {asset.id}")
    for name, value in sections["asset"].items():
        click.echo(_field_line(name, value))


# -- changing -----------------------------------------------------------------------------


@jobs_cli.command("retry", with_appcontext=False)
@database_command
@click.argument("job_id")
def retry_job_command(job_id: str) -> None:
    """Queue a failed or cancelled job again, from its first attempt."""
    job = _job_or_fail(job_id)
    was, now = job.status, gaia().clock.now()
    if not _moved(job.id, RETRYABLE, status="queued", progress=0, attempts=0, error=None,
                  error_kind=None, cancel_requested=False, not_before=None, lease_owner=None,
                  lease_expires_at=None, started_at=None, finished_at=None, dispatched_at=now,
                  updated_at=now):
        db.session.rollback()
        _read_again(job)
        fail(f"job {job.id} is {job.status}; only a failed or cancelled job can be retried")
    db.session.execute(
        update(Asset).where(Asset.id == job.asset_id).values(status="pending", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    runtime = gaia().assets
    if runtime.runs_inline:
        click.echo("No REDIS_URL: the job runs in this process; the command ends when it has.")
    try:
        runtime.dispatch(job.id)
    except Exception as exc:  # the row is committed: the sweeper sends the job all the same
        click.echo(f"warning: the job is queued but could not be sent now ({exc}); "
                   "the sweeper sends it later.", err=True)
    click.echo(f"Job {job.id} queued again (it was {was}).")


@jobs_cli.command("cancel", with_appcontext=False)
@database_command
@click.argument("job_id")
def cancel_job_command(job_id: str) -> None:
    """Cancel a queued job at once, or ask a running one to stop."""
    job = _job_or_fail(job_id)
    was = job.status
    if was == "running" and job.cancel_requested:
        click.echo(f"Job {job.id} was already asked to stop; its runner stops at its next step.")
        return
    try:
        stopped = control.cancel(job, gaia().clock.now())
    except control.JobFinished:
        fail(f"job {job.id} is already {job.status}; only a queued or running job can be cancelled")
    except APIError as error:
        fail(error.detail)
    db.session.commit()
    click.echo(f"Cancelled job {job.id} (it was {was})." if stopped
               else f"Asked job {job.id} to stop; its runner stops at its next step.")


@jobs_cli.command("sweep", with_appcontext=False)
@database_command
@click.option("--all-queued", is_flag=True,
              help="Send every due queued job, not only those sent long ago.")
def sweep_jobs_command(all_queued: bool) -> None:
    """Send again the jobs whose worker or message died (what the sweeper does)."""
    from gaia_app.jobs.dispatch import due_jobs

    runtime = gaia().assets
    found = due_jobs(redispatch_after=runtime.settings.redispatch_after, everything_queued=all_queued)
    if not found:
        click.echo("No jobs to send again.")
        return
    if runtime.runs_inline:
        click.echo("No REDIS_URL: the jobs run in this process; the command ends when they have.")
    for job_id in found:
        runtime.dispatch(job_id)
        click.echo(f"Sent job {job_id} again.")
