"""The asset generation task: one attempt at one job, by id.

The job row is the system of record (`gaia_app.jobs.runner`): this task only names it. A
message delivered twice, or again after its worker died, finds nothing to claim or takes over
an abandoned job; a transient failure sends the task again after the job's backoff.
"""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown

from gaia_app.jobs.dispatch import TASK_NAME, Sweeper, runner_identity
from gaia_app.jobs.runner import run_job
from gaia_app.state import gaia


@shared_task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def generate_asset(self, job_id: str) -> str:
    outcome = run_job(job_id, runner_identity(f"celery:{self.request.hostname or 'worker'}"))
    if outcome.retry_in is not None:
        gaia().assets.dispatch(job_id, delay=outcome.retry_in)
    return outcome.status


_sweepers: list[Sweeper] = []


@worker_ready.connect
def start_sweeper(sender, **_kwargs) -> None:
    """One sweeper per worker (in its main process): jobs whose worker died, or whose message a
    restarted broker lost, are sent again."""
    app = sender.app.flask_app
    state = gaia(app)
    sweeper = Sweeper(app, state.settings.assets, lambda job_id: state.assets.dispatch(job_id))
    _sweepers.append(sweeper)
    sweeper.start()


@worker_shutdown.connect
def stop_sweeper(**_kwargs) -> None:
    while _sweepers:
        _sweepers.pop().stop()


@worker_process_shutdown.connect
def close_publisher(**_kwargs) -> None:
    """A pool child's last events are sent before it exits (it may skip exit handlers)."""
    from celery import current_app

    app = getattr(current_app, "flask_app", None)
    if app is not None:
        gaia(app).assets.close()
