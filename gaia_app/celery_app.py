"""Celery the documented Flask way: tasks run inside an app context of the same factory.

`create_app` calls `celery_init_app` when REDIS_URL is set and the process serves assets (or
is a worker), so a route's send goes to Redis; without Redis, jobs run in the web process
(`gaia_app.jobs.dispatch.InlineDispatcher`) and Celery is never loaded.

The settings below are the ones job reliability rests on (docs/decisions.md, "Asset jobs"):
- acknowledge late and reject on worker loss, so a task whose pool child died (SIGKILL, OOM)
  goes back to the queue instead of being lost; prefetch 1, so a busy worker does not hold
  messages other workers could run;
- the Redis transport redelivers an unacknowledged message after `visibility_timeout`: it is
  set well above any job's run time and countdown, and a redelivered message for a job that
  is running or done finds nothing to claim;
- the worker's task events on (`worker_send_task_events`), so Flower shows jobs; the web
  side's `task-sent` event off, since it doubled the cost of each enqueue.
A worker also runs the jobs' sweeper (`tasks.assets`, on `worker_ready`).

The request id of the request that sent a task rides in the message's headers
(`gaia_request_id`) and names the task's log lines; a worker's lines call their service
`worker`.
"""

from __future__ import annotations

import threading

from flask import Flask

from gaia_app.state import gaia

_lock = threading.Lock()


def celery_settings(redis_url: str | None) -> dict:
    """Every Celery setting, lowercase, in one place."""
    transport = {}
    # Plain redis:// only: a transport named by path reads no TLS from the URL's scheme.
    if redis_url and redis_url.startswith("redis://"):
        from gaia_app.celery_transport import TRANSPORT

        transport = {"broker_transport": TRANSPORT}
    return {
        **transport,
        "broker_url": redis_url or "memory://",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": 3600},
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_send_task_events": True,
        # No task-sent event: it doubled what each enqueue publishes (bench/README.md,
        # "Assets"); Flower still sees every task from the worker's own events.
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "imports": ("tasks.assets",),
    }


def celery_init_app(app: Flask):
    from celery import Celery, Task

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_settings(gaia(app).settings.redis_url))
    celery_app.set_default()
    celery_app.flask_app = app  # for worker signals (tasks.assets starts the sweeper)
    app.extensions["celery"] = celery_app
    _connect_request_ids()
    _connect_worker_signals(app)
    return celery_app


def celery_for(app: Flask):
    """The app's Celery, made on first use where the factory did not make it."""
    found = app.extensions.get("celery")
    if found is None:
        with _lock:
            found = app.extensions.get("celery") or celery_init_app(app)
    return found


def _connect_request_ids() -> None:
    from celery.signals import before_task_publish, task_postrun, task_prerun

    from gaia_app.request_ids import CELERY_HEADER, bind_request_id, current_request_id

    def add_request_id(headers=None, **_kwargs):
        request_id = current_request_id()
        if request_id and headers is not None:
            headers.setdefault(CELERY_HEADER, request_id)

    def take_request_id(task=None, **_kwargs):
        bind_request_id(getattr(task.request, CELERY_HEADER, None) if task is not None else None)

    def drop_request_id(**_kwargs):
        bind_request_id(None)

    # Signals are process-wide: one receiver each, however many apps a process makes.
    before_task_publish.connect(add_request_id, weak=False, dispatch_uid="gaia-request-id-out")
    task_prerun.connect(take_request_id, weak=False, dispatch_uid="gaia-request-id-in")
    task_postrun.connect(drop_request_id, weak=False, dispatch_uid="gaia-request-id-done")


def _connect_worker_signals(app: Flask) -> None:
    from celery.signals import celeryd_init, worker_process_init

    @celeryd_init.connect(weak=False)
    def _name_the_worker(**_kwargs):
        from gaia_app.logs import set_service

        set_service("worker")

    @worker_process_init.connect(weak=False)
    def _dispose_engine_after_fork(**_kwargs):
        # Connections inherited from the parent must not be shared across processes.
        from gaia_app.extensions import db

        with app.app_context():
            db.engine.dispose(close=False)
