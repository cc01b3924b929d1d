"""How a committed job reaches a runner, and the sweeper that sends it again when its
worker or its message died.

- `CeleryDispatcher` (with REDIS_URL): the task `gaia.assets.generate` through the broker,
  sent by name, so a web process never imports the tasks (nor Celery until the first send).
- `InlineDispatcher` (the embedded default, no Redis): a small thread pool of this process
  runs the same `run_job` with the same claim. Nothing is kept only in memory: on start, and
  every sweep after, it takes up whatever the database says is due, so a job queued or
  running when the process stopped is done after a restart.
- `Sweeper`: every `sweep_interval`, running jobs whose lease ran out and queued jobs sent
  longer than `redispatch_after` ago (a broker restarted without persistence loses its
  queue) are sent again. A job sent twice is harmless: only one claim succeeds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Protocol

from flask import Flask
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import OperationalError, ProgrammingError

from gaia_app.extensions import db
from gaia_app.request_ids import bind_request_id, current_request_id
from gaia_app.jobs.settings import AssetSettings
from gaia_app.models import AssetJob
from gaia_app.state import gaia

log = logging.getLogger("gaia.jobs")

TASK_NAME = "gaia.assets.generate"


class Dispatcher(Protocol):
    def dispatch(self, job_id: str, *, delay: float = 0.0) -> None: ...

    def close(self) -> None: ...


def runner_identity(kind: str) -> str:
    """Unique per attempt: host, process and a random part (a lease names its holder)."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


# -- what is due --------------------------------------------------------------------------


def due_jobs(*, redispatch_after: float, everything_queued: bool = False,
             sent_before: datetime | None = None) -> list[str]:
    """Jobs to send again now, marked as sent (a conditional update per job, so two
    sweepers do not both take one). `everything_queued`: every queued job whose time has
    come, however recently it was sent, or (with `sent_before`) not sent since then. Call in
    an app context."""
    now = gaia().clock.now()
    long_ago = or_(AssetJob.dispatched_at.is_(None),
                   AssetJob.dispatched_at < now - timedelta(seconds=redispatch_after))
    waiting = (AssetJob.status == "queued") & or_(AssetJob.not_before.is_(None), AssetJob.not_before <= now)
    if not everything_queued:
        waiting = waiting & long_ago
    elif sent_before is not None:
        waiting = waiting & or_(AssetJob.dispatched_at.is_(None), AssetJob.dispatched_at < sent_before)
    # A lease that ran out: sent once since then (and again only if that one is lost too).
    abandoned = and_(AssetJob.status == "running", AssetJob.lease_expires_at < now,
                     or_(long_ago, AssetJob.dispatched_at < AssetJob.lease_expires_at))
    candidates = db.session.execute(
        select(AssetJob.id, AssetJob.dispatched_at).where(or_(waiting, abandoned))
        .order_by(AssetJob.created_at).limit(500)
    ).all()
    taken = []
    for job_id, sent in candidates:
        same = AssetJob.dispatched_at.is_(None) if sent is None else AssetJob.dispatched_at == sent
        marked = db.session.execute(
            update(AssetJob).where(AssetJob.id == job_id, same).values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
        if marked.rowcount == 1:
            taken.append(str(job_id))
    db.session.commit()
    return taken


class Sweeper:
    """A daemon thread that sends due jobs again, every `interval` seconds."""

    def __init__(self, app: Flask, settings: AssetSettings, send: Callable[[str], None], *,
                 first_everything: bool = False) -> None:
        self.app = app
        self.settings = settings
        self.send = send
        self.first_everything = first_everything
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: datetime | None = None

    def start(self) -> None:
        if self._thread is None:
            # The first round (`first_everything`) takes up jobs sent before this moment, left
            # by a process before this one; those sent since are this process's own.
            self._started = gaia(self.app).clock.now()
            self._thread = threading.Thread(target=self._loop, name="gaia-asset-sweeper", daemon=True)
            self._thread.start()

    def sweep_once(self, *, everything_queued: bool = False) -> list[str]:
        with self.app.app_context():
            try:
                found = due_jobs(redispatch_after=self.settings.redispatch_after,
                                 everything_queued=everything_queued, sent_before=self._started)
            finally:
                db.session.remove()
        for job_id in found:
            log.info("sweeper: sending job %s again", job_id)
            self.send(job_id)
        return found

    def _loop(self) -> None:
        everything = self.first_everything
        while not self._stop.is_set():
            try:
                self.sweep_once(everything_queued=everything)
                everything = False
            except (OperationalError, ProgrammingError) as error:
                # The database is away, or not migrated yet (/health says which): next round.
                log.warning("sweeper: database not ready: %s", str(error.orig).strip().splitlines()[0])
            except Exception:
                log.exception("sweeper round failed")
            self._stop.wait(self.settings.sweep_interval)

    def stop(self) -> None:
        self._stop.set()


# -- with Redis: Celery -------------------------------------------------------------------


class CeleryDispatcher:
    def __init__(self, app: Flask, settings: AssetSettings) -> None:
        self.app = app
        self.settings = settings

    def dispatch(self, job_id: str, *, delay: float = 0.0) -> None:
        # Made by the factory whenever REDIS_URL is set and the process serves assets.
        # `declare=[]`: the task goes to the default queue by its name (kombu's default
        # exchange), which needs no declaration on Redis; without it kombu copies and hashes
        # the queue and its exchange on every send, only to find them declared already.
        self.app.extensions["celery"].send_task(TASK_NAME, args=[job_id], countdown=delay or None,
                                                declare=[])

    def close(self) -> None:
        return None


# -- without Redis: threads of this process ------------------------------------------------


class InlineDispatcher:
    def __init__(self, app: Flask, settings: AssetSettings) -> None:
        self.app = app
        self.settings = settings
        self._pool = ThreadPoolExecutor(max_workers=settings.inline_workers, thread_name_prefix="gaia-asset")
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()
        self._closed = False
        # The first round takes up every queued job: none of them is in this new process's pool.
        self.sweeper = Sweeper(app, settings, self._submit, first_everything=True)
        self.sweeper.start()

    def dispatch(self, job_id: str, *, delay: float = 0.0) -> None:
        if delay > 0:
            timer = threading.Timer(delay, self._fire, args=(job_id,))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()
        else:
            self._submit(job_id)

    def _fire(self, job_id: str) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
        self._submit(job_id)

    def _submit(self, job_id: str) -> None:
        if self._closed:
            return
        try:
            # The request that sent the job (if any) names its log lines, as a Celery task's.
            self._pool.submit(self._run, job_id, current_request_id())
        except RuntimeError:  # the interpreter is exiting: the next process takes the job up
            log.info("job %s not started: this process is shutting down", job_id)

    def _run(self, job_id: str, request_id: str | None = None) -> None:
        from gaia_app.jobs.runner import run_job

        bind_request_id(request_id)
        try:
            with self.app.app_context():
                try:
                    outcome = run_job(job_id, runner_identity("inline"))
                finally:
                    db.session.remove()
            if outcome.retry_in is not None:
                self.dispatch(job_id, delay=outcome.retry_in)
        except Exception:
            log.exception("job %s: the inline runner failed; the sweeper will send it again", job_id)

    def close(self) -> None:
        self._closed = True
        self.sweeper.stop()
        with self._lock:
            for timer in self._timers:
                timer.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
