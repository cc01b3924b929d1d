"""One attempt at one job: claim it, hold its lease, generate, store, finish.

Every change of a job's state is a conditional UPDATE on its row, so that whatever a broker
does (deliver a message twice, redeliver after a worker died, keep a message past its
visibility timeout) a job runs to its end once:
- **claim**: `queued` (and due) becomes `running` under this runner's lease, or a `running`
  job whose lease ran out is taken over; anything else means someone else has it, or it is
  over, and the message is dropped;
- **lease**: a heartbeat renews it while the generator works; a runner whose renewal finds the
  row no longer its own (taken over, cancelled, deleted) stops;
- **finish**: `succeeded`/`failed` only from `running` under this runner's lease, in the same
  transaction as the asset's row; the completed event is published by the one runner that
  finished it.
Transient generator failures go back to `queued` with a `not_before`, up to `max_attempts`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import or_, update

from gaia_app.extensions import db
from gaia_app.generators.base import Cancelled, GenerationRequest, GeneratorError
from gaia_app.jobs import events
from gaia_app.models import Asset, AssetJob
from gaia_app.request_ids import bind_request_id
from gaia_app.state import gaia
from gaia_app.storage.base import StorageError

log = logging.getLogger("gaia.jobs")

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Outcome:
    """What an attempt came to; `retry_in` is set when the job waits for another attempt."""

    status: str  # succeeded, failed, cancelled, retry, skipped
    retry_in: float | None = None


class LeaseLost(Exception):
    """The job is no longer this runner's (taken over after a lease ran out, or deleted)."""


def retry_delay(settings, attempt: int) -> float:
    return min(settings.retry_base_delay * 2 ** max(attempt - 1, 0), settings.retry_max_delay)


def run_job(job_id: str, owner: str) -> Outcome:
    """One attempt at `job_id` by `owner` (unique per attempt). Call in an app context."""
    state = gaia()
    try:
        job_uuid = uuid.UUID(str(job_id))
    except ValueError:
        return Outcome("skipped")
    now = state.clock.now()
    if not _claim(job_uuid, owner, now, state.settings.assets.lease_seconds):
        db.session.rollback()
        return _give_up_if_abandoned_too_often(job_uuid, now)
    db.session.commit()
    job = db.session.get(AssetJob, job_uuid)
    if job is None:
        return Outcome("skipped")
    if job.request_id:
        # Whatever sent this attempt (the request's own dispatch, a sweeper, a retry), its
        # lines name the request that made the job.
        bind_request_id(job.request_id)
    return Attempt(job, owner).run()


def _claim(job_id: uuid.UUID, owner: str, now: datetime, lease_seconds: float) -> bool:
    due = or_(AssetJob.not_before.is_(None), AssetJob.not_before <= now)
    taken = db.session.execute(
        update(AssetJob)
        .where(AssetJob.id == job_id, AssetJob.cancel_requested.is_(False),
               or_((AssetJob.status == "queued") & due,
                   _abandoned(now) & (AssetJob.attempts < AssetJob.max_attempts)))
        .values(status="running", lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                attempts=AssetJob.attempts + 1, started_at=db.func.coalesce(AssetJob.started_at, now),
                not_before=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return taken.rowcount == 1


def _abandoned(now: datetime):
    return (AssetJob.status == "running") & (AssetJob.lease_expires_at < now)


def _give_up_if_abandoned_too_often(job_id: uuid.UUID, now: datetime) -> Outcome:
    """A job whose worker died on each of its attempts (killed, out of memory) is not taken
    over forever: it fails, saying so."""
    failed = db.session.execute(
        update(AssetJob).where(AssetJob.id == job_id, _abandoned(now), AssetJob.attempts >= AssetJob.max_attempts)
        .values(status="failed", error_kind="worker_lost", finished_at=now, lease_owner=None,
                lease_expires_at=None, updated_at=now,
                error="The job's worker stopped answering on every attempt (killed or out of memory?).")
        .execution_options(synchronize_session=False)
    )
    if failed.rowcount != 1:
        db.session.rollback()
        return Outcome("skipped")
    job = db.session.get(AssetJob, job_id)
    db.session.execute(update(Asset).where(Asset.id == job.asset_id).values(status="failed", updated_at=now))
    db.session.commit()
    publish(events.FAILED, job, error=job.error, error_kind=job.error_kind, attempts=job.attempts)
    return Outcome("failed")


def publish(subject: str, job: AssetJob, **fields) -> None:
    """One event about `job`; a publisher that fails is logged, never the job's fate."""
    payload = {"job_id": str(job.id), "asset_id": str(job.asset_id), "user_id": str(job.user_id),
               "category": (job.request or {}).get("category"), **fields}
    try:
        gaia().assets.events.publish(subject, payload)
    except Exception:
        log.warning("event %s for job %s not published", subject, job.id, exc_info=True)


def _mine(job_id: uuid.UUID, owner: str):
    return (AssetJob.id == job_id, AssetJob.lease_owner == owner, AssetJob.status == "running")


class Attempt:
    """The claimed job, worked on by this runner."""

    def __init__(self, job: AssetJob, owner: str) -> None:
        # The heartbeat runs in a thread of its own, which needs the app to reach the database.
        self.app = current_app._get_current_object()
        self.state = gaia()
        self.settings = self.state.settings.assets
        self.job = job
        self.job_id = job.id
        self.asset_id = job.asset_id
        self.user_id = job.user_id
        self.api_key_id = job.api_key_id
        self.attempt = job.attempts
        self.max_attempts = job.max_attempts
        self.request = dict(job.request or {})
        self.owner = owner
        self.stopped = threading.Event()
        self.lost = threading.Event()
        self.last_progress = -1

    # -- the attempt -----------------------------------------------------------------------

    def run(self) -> Outcome:
        started = self.state.clock.monotonic()
        self._publish(events.STARTED, attempt=self.attempt, provider=self.request.get("provider"))
        heartbeat = threading.Thread(target=self._heartbeat, name=f"lease-{self.job_id}", daemon=True)
        heartbeat.start()
        try:
            generated = self._generate()
            stored = self.state.assets.storage.put(generated.data, generated.content_type)
        except Cancelled:
            return self._stop_cancelled()
        except LeaseLost:
            log.info("job %s: lease lost by %s; another runner has it", self.job_id, self.owner)
            return Outcome("skipped")
        except GeneratorError as error:
            return self._failed(error.kind, error.message, transient=error.transient,
                                retry_after=error.retry_after)
        except StorageError as error:
            return self._failed("storage", f"storing the file failed: {error}", transient=True)
        except Exception:  # a defect: fail the job once rather than loop on it
            log.exception("job %s: unexpected error", self.job_id)
            return self._failed("internal", "The generator failed unexpectedly.", transient=False)
        finally:
            self.stopped.set()
            heartbeat.join(timeout=5)
        return self._succeeded(generated, stored, self.state.clock.monotonic() - started)

    def _generate(self):
        generator = self.state.assets.generator(self.request["provider"])
        request = GenerationRequest(
            category=self.request["category"], description=self.request["description"],
            seed=int(self.request.get("seed") or 0), style=self.request.get("style"),
            options=generator.check_options(self.request["category"], self.request.get("options") or {}),
        )
        return generator.generate(request, self._progress)

    # -- while it works --------------------------------------------------------------------

    def _progress(self, percent: int, message: str | None = None) -> None:
        """Called by the generator between steps: record it, and stop if told to."""
        percent = max(0, min(int(percent), 99))
        if self.lost.is_set():
            raise LeaseLost()
        if percent <= self.last_progress:
            return
        self.last_progress = percent
        if not self._renew(progress=percent):
            self._raise_stop()
        self._publish(events.PROGRESS, progress=percent, message=message)

    def _heartbeat(self) -> None:
        with self.app.app_context():
            self._beat_until_stopped()

    def _beat_until_stopped(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.05)
        while not self.stopped.wait(interval):
            try:
                if not self._renew():
                    self.lost.set()
                    return
            except Exception:  # the database hiccuped: the next beat tries again
                log.warning("job %s: lease renewal failed", self.job_id, exc_info=True)

    def _renew(self, progress: int | None = None) -> bool:
        """Extend the lease (and record progress); False when the job is no longer ours to run
        (cancel requested, taken over, deleted)."""
        now = self.state.clock.now()
        values = {"lease_expires_at": now + timedelta(seconds=self.settings.lease_seconds), "updated_at": now}
        if progress is not None:
            values["progress"] = progress
        with db.engine.begin() as connection:
            renewed = connection.execute(
                update(AssetJob).where(*_mine(self.job_id, self.owner), AssetJob.cancel_requested.is_(False))
                .values(**values)
            )
        return renewed.rowcount == 1

    def _raise_stop(self) -> None:
        with db.engine.connect() as connection:
            row = connection.execute(
                db.select(AssetJob.cancel_requested, AssetJob.lease_owner).where(AssetJob.id == self.job_id)
            ).first()
        if row is not None and row.cancel_requested and row.lease_owner == self.owner:
            raise Cancelled()
        self.lost.set()
        raise LeaseLost()

    # -- how it ends -----------------------------------------------------------------------

    def _succeeded(self, generated, stored, seconds: float) -> Outcome:
        now = self.state.clock.now()
        cost = generated.cost if generated.cost is not None else self.request.get("estimated_cost")
        done = db.session.execute(
            update(AssetJob).where(*_mine(self.job_id, self.owner))
            .values(status="succeeded", progress=100, finished_at=now, lease_owner=None,
                    lease_expires_at=None, error=None, error_kind=None, updated_at=now)
        )
        if done.rowcount != 1:
            db.session.rollback()
            return self._lost_at_the_end()
        db.session.execute(
            update(Asset).where(Asset.id == self.asset_id)
            .values(status="ready", content_type=generated.content_type, storage_key=stored.key,
                    sha256=stored.sha256, size_bytes=stored.size, details=dict(generated.metadata),
                    cost=cost, updated_at=now)
        )
        db.session.commit()
        self._record_usage("ok", seconds, cost)
        self._publish(events.COMPLETED, sha256=stored.sha256, size_bytes=stored.size,
                      content_type=generated.content_type, cost=cost)
        return Outcome("succeeded")

    def _failed(self, kind: str, message: str, *, transient: bool, retry_after: float | None = None) -> Outcome:
        now = self.state.clock.now()
        if transient and self.attempt < self.max_attempts:
            delay = max(retry_delay(self.settings, self.attempt), retry_after or 0.0)
            moved = self._end(status="queued", error=message, error_kind=kind,
                              not_before=now + timedelta(seconds=delay), dispatched_at=now)
            if moved:
                log.info("job %s: attempt %d failed (%s), next in %.1fs", self.job_id, self.attempt, kind, delay)
                return Outcome("retry", retry_in=delay)
            return self._lost_at_the_end()
        if not self._end(status="failed", error=message, error_kind=kind, finished_at=now, asset_status="failed"):
            return self._lost_at_the_end()
        self._record_usage("error", 0.0, None, error_type=kind)
        self._publish(events.FAILED, error=message, error_kind=kind, attempts=self.attempt)
        return Outcome("failed")

    def _stop_cancelled(self) -> Outcome:
        now = self.state.clock.now()
        if not self._end(status="cancelled", error="Cancelled.", error_kind="cancelled",
                         finished_at=now, asset_status="failed", cancelled=True):
            return self._lost_at_the_end()
        self._publish(events.FAILED, error="Cancelled.", error_kind="cancelled", attempts=self.attempt)
        return Outcome("cancelled")

    def _end(self, *, status: str, asset_status: str | None = None, cancelled: bool = False, **values) -> bool:
        now = self.state.clock.now()
        conditions = list(_mine(self.job_id, self.owner))
        if not cancelled:
            conditions.append(AssetJob.cancel_requested.is_(False))
        ended = db.session.execute(
            update(AssetJob).where(*conditions)
            .values(status=status, lease_owner=None, lease_expires_at=None, updated_at=now, **values)
        )
        if ended.rowcount != 1:
            db.session.rollback()
            return False
        if asset_status:
            db.session.execute(update(Asset).where(Asset.id == self.asset_id).values(status=asset_status, updated_at=now))
        db.session.commit()
        return True

    def _lost_at_the_end(self) -> Outcome:
        """The row changed under us at the last moment: a cancel, a take-over or a delete."""
        job = db.session.get(AssetJob, self.job_id)
        if job is not None and job.cancel_requested and job.lease_owner == self.owner:
            return self._stop_cancelled()
        return Outcome("skipped")

    # -- what it tells the world -----------------------------------------------------------

    def _publish(self, subject: str, **fields) -> None:
        publish(subject, self.job, **fields)

    def _record_usage(self, status: str, seconds: float, cost: float | None, error_type: str | None = None) -> None:
        self.state.usage.record(
            user_id=self.user_id, api_key_id=self.api_key_id, kind="asset.generate",
            provider=self.request.get("provider"), model=self.request.get("category"), stream=False,
            status=status, error_type=error_type, prompt_tokens=0, completion_tokens=0, total_tokens=0,
            cost=cost, latency_ms=seconds * 1000.0,
        )
