"""Celery the documented Flask way: tasks run inside an app context of the same factory."""

from __future__ import annotations

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask

from gaia_app.state import gaia


def celery_init_app(app: Flask) -> Celery:
    settings = gaia(app).settings

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    broker = settings.redis_url or "memory://"
    celery_app.config_from_object({
        "broker_url": broker,
        "result_backend": settings.redis_url,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "imports": ("tasks",),
    })
    celery_app.set_default()
    app.extensions["celery"] = celery_app

    @worker_process_init.connect(weak=False)
    def _dispose_engine_after_fork(**_kwargs):
        # Connections inherited from the parent must not be shared across processes.
        from gaia_app.extensions import db

        with app.app_context():
            db.engine.dispose(close=False)

    return celery_app
