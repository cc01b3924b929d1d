"""Asset jobs run to their end once, whatever delivers them: the claim, the lease, cancel,
bounded retries, the sweeper, and the embedded default's in-process runner surviving a
restart. On SQLite and PostgreSQL, with the real runner and storage."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from gaia_app import accounts
from gaia_app.extensions import db
from gaia_app.generators.base import GeneratedFile, GeneratorError
from gaia_app.jobs import events
from gaia_app.jobs.dispatch import Sweeper, due_jobs
from gaia_app.jobs.runner import run_job
from gaia_app.models import Asset, AssetJob, UsageEvent
from gaia_app.state import gaia
from tests.conftest import make_app

PNG_FORMATS = {"image": "png", "texture": "png", "audio": "wav", "model3d": "glb"}


class RecordingEvents:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def publish(self, subject, payload):
        with self.lock:
            self.sent.append((subject, payload))

    def close(self):
        return None

    def subjects(self, job_id) -> list[str]:
        return [subject for subject, payload in self.sent if payload["job_id"] == str(job_id)]


class ScriptedGenerator:
    """A generator whose behaviour each test scripts: a list of what each call does."""

    id = "scripted"
    name = "Scripted"
    categories = ("image",)

    def __init__(self, *script) -> None:
        self.script = list(script)
        self.calls = 0
        self.hook = None  # called with the progress callback between steps

    def check_options(self, category, options):
        return dict(options)

    def cost(self, request):
        return 0.25

    def generate(self, request, progress):
        self.calls += 1
        step = self.script.pop(0) if self.script else "ok"
        for percent in (10, 50, 90):
            progress(percent)
            if self.hook:
                self.hook(progress)
        if isinstance(step, Exception):
            raise step
        return GeneratedFile(data=b"\x89PNG\r\n\x1a\n" + request.description.encode(), format="png",
                             metadata={"calls": self.calls})


@pytest.fixture
def recorder(app):
    found = RecordingEvents()
    gaia(app).assets.use(events=found)
    return found


def new_job(app, *, provider="builtin", category="image", description="a red planet", **job_fields) -> uuid.UUID:
    with app.app_context():
        user = accounts.find_user_by_email("maker@example.com") or accounts.create_user("maker@example.com")
        db.session.flush()
        asset = Asset(user_id=user.id, category=category, format=PNG_FORMATS[category],
                      description=description, provider=provider)
        db.session.add(asset)
        db.session.flush()
        job = AssetJob(asset_id=asset.id, user_id=user.id, request={
            "category": category, "description": description, "provider": provider, "seed": 3, "options": {}},
            **job_fields)
        db.session.add(job)
        db.session.commit()
        return job.id


def job_row(app, job_id) -> AssetJob:
    with app.app_context():
        job = db.session.get(AssetJob, job_id)
        db.session.expunge(job)
        return job


def asset_of(app, job_id) -> Asset:
    with app.app_context():
        asset = db.session.execute(select(Asset).join(AssetJob, AssetJob.asset_id == Asset.id)
                                   .where(AssetJob.id == job_id)).scalar_one()
        db.session.expunge(asset)
        return asset


def run(app, job_id, owner="test-runner"):
    with app.app_context():
        try:
            return run_job(str(job_id), f"{owner}:{uuid.uuid4().hex}")
        finally:
            db.session.remove()


def test_a_job_runs_once_and_its_file_is_stored(app, recorder):
    job_id = new_job(app)
    assert run(app, job_id).status == "succeeded"
    assert run(app, job_id).status == "skipped"  # a second delivery finds nothing to claim
    job, asset = job_row(app, job_id), asset_of(app, job_id)
    assert (job.status, job.progress, job.attempts, job.lease_owner) == ("succeeded", 100, 1, None)
    assert asset.status == "ready" and asset.details["width"] == 512
    data = b"".join(gaia(app).assets.storage.open_range(asset.storage_key))
    assert data.startswith(b"\x89PNG") and len(data) == asset.size_bytes
    subjects = recorder.subjects(job_id)
    assert subjects[0] == events.STARTED and subjects.count(events.COMPLETED) == 1
    assert events.PROGRESS in subjects and subjects[-1] == events.COMPLETED


def test_concurrent_deliveries_make_one_file(app, recorder):
    generator = ScriptedGenerator()
    gaia(app).assets.use(generators={"scripted": generator})
    job_id = new_job(app, provider="scripted")
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(run(app, job_id).status)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["skipped", "skipped", "skipped", "succeeded"]
    assert generator.calls == 1 and recorder.subjects(job_id).count(events.COMPLETED) == 1


def test_a_job_whose_lease_ran_out_is_taken_over_and_a_live_one_is_not(app, recorder):
    past = gaia(app).clock.now() - timedelta(seconds=5)
    future = gaia(app).clock.now() + timedelta(seconds=60)
    alive = new_job(app, status="running", lease_owner="elsewhere", lease_expires_at=future, attempts=1)
    dead = new_job(app, status="running", lease_owner="died", lease_expires_at=past, attempts=1)
    assert run(app, alive).status == "skipped" and job_row(app, alive).lease_owner == "elsewhere"
    assert run(app, dead).status == "succeeded"
    assert job_row(app, dead).attempts == 2


def test_a_runner_that_lost_its_lease_stops_without_finishing(app, recorder):
    generator = ScriptedGenerator()
    job_id = new_job(app, provider="scripted")

    def taken_over(progress):
        with app.app_context():
            db.session.execute(update(AssetJob).where(AssetJob.id == job_id).values(lease_owner="thief"))
            db.session.commit()

    generator.hook = taken_over
    gaia(app).assets.use(generators={"scripted": generator})
    assert run(app, job_id).status == "skipped"
    job = job_row(app, job_id)
    assert job.status == "running" and job.lease_owner == "thief"
    assert events.COMPLETED not in recorder.subjects(job_id)


def test_cancel_stops_a_running_job(app, recorder):
    generator = ScriptedGenerator()
    job_id = new_job(app, provider="scripted")

    def cancel(progress):
        with app.app_context():
            db.session.execute(update(AssetJob).where(AssetJob.id == job_id).values(cancel_requested=True))
            db.session.commit()

    generator.hook = cancel
    gaia(app).assets.use(generators={"scripted": generator})
    assert run(app, job_id).status == "cancelled"
    job = job_row(app, job_id)
    assert (job.status, job.error_kind, job.lease_owner) == ("cancelled", "cancelled", None)
    assert asset_of(app, job_id).status == "failed"
    assert recorder.subjects(job_id)[-1] == events.FAILED
    assert run(app, job_id).status == "skipped"


def test_transient_failures_retry_with_backoff_then_fail_for_good(app, recorder):
    flaky = GeneratorError("scripted", "unavailable", "provider down (503)")
    generator = ScriptedGenerator(flaky, flaky, flaky, "ok")
    gaia(app).assets.use(generators={"scripted": generator})
    job_id = new_job(app, provider="scripted", max_attempts=3)
    first = run(app, job_id)
    assert first.status == "retry" and first.retry_in == pytest.approx(2.0)
    job = job_row(app, job_id)
    assert job.status == "queued" and job.not_before is not None and job.error == "provider down (503)"
    assert run(app, job_id).status == "skipped"  # not due before not_before
    for expected in ("retry", "failed"):
        with app.app_context():
            db.session.execute(update(AssetJob).where(AssetJob.id == job_id).values(not_before=None))
            db.session.commit()
        assert run(app, job_id).status == expected
    job = job_row(app, job_id)
    assert (job.status, job.attempts, job.error_kind) == ("failed", 3, "unavailable")
    assert generator.calls == 3 and recorder.subjects(job_id).count(events.FAILED) == 1


def test_a_refusal_fails_at_once_and_a_defect_does_not_loop(app, recorder):
    refused = ScriptedGenerator(GeneratorError("scripted", "refused", "moderation refused the prompt"))
    gaia(app).assets.use(generators={"scripted": refused})
    job_id = new_job(app, provider="scripted")
    assert run(app, job_id).status == "failed"
    assert (job_row(app, job_id).error_kind, job_row(app, job_id).attempts) == ("refused", 1)
    broken = ScriptedGenerator(ZeroDivisionError("bug"))
    gaia(app).assets.use(generators={"scripted": broken})
    other = new_job(app, provider="scripted")
    assert run(app, other).status == "failed" and job_row(app, other).error_kind == "internal"


def test_usage_records_each_finished_generation(app, recorder):
    gaia(app).assets.use(generators={"scripted": ScriptedGenerator()})
    job_id = new_job(app, provider="scripted")
    run(app, job_id)
    gaia(app).usage.flush()
    with app.app_context():
        usage = db.session.execute(select(UsageEvent).where(UsageEvent.kind == "asset.generate")).scalars().all()
    assert [(u.status, u.provider, u.model) for u in usage] == [("ok", "scripted", "image")]


def test_the_sweeper_sends_abandoned_and_long_unclaimed_jobs_again(app):
    now = gaia(app).clock.now()
    fresh = new_job(app, dispatched_at=now)
    stale = new_job(app, dispatched_at=now - timedelta(hours=1))
    dead = new_job(app, status="running", lease_owner="died", lease_expires_at=now - timedelta(seconds=1))
    waiting = new_job(app, not_before=now + timedelta(hours=1), dispatched_at=now - timedelta(hours=1))
    with app.app_context():
        found = set(due_jobs(redispatch_after=120))
        assert found == {str(stale), str(dead)}
        assert due_jobs(redispatch_after=120) == []  # marked as sent: not twice
        assert set(due_jobs(redispatch_after=120, everything_queued=True)) == {str(fresh), str(stale)}
    del waiting


def _wait_for(app, job_ids, statuses=("succeeded", "failed", "cancelled"), timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = [job_row(app, job_id).status for job_id in job_ids]
        if all(status in statuses for status in rows):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"jobs still {rows} after {timeout}s")


def test_the_embedded_runner_makes_every_category(app, recorder):
    job_ids = [new_job(app, category=category, description="a small blue crate") for category in PNG_FORMATS]
    for job_id in job_ids:
        gaia(app).assets.dispatch(job_id)
    assert _wait_for(app, job_ids) == ["succeeded"] * 4
    assert {asset_of(app, job_id).content_type for job_id in job_ids} == {
        "image/png", "audio/wav", "model/gltf-binary"}


def test_jobs_left_by_a_stopped_process_are_done_after_a_restart(app, database_url, tmp_path_factory):
    """A queued job never sent, and a running one whose process died: a new process with the
    same database (the next gunicorn worker) takes both up on start."""
    queued = new_job(app)
    running = new_job(app, status="running", lease_owner="gone",
                      lease_expires_at=gaia(app).clock.now() - timedelta(seconds=1), attempts=1)
    restarted = make_app(database_url, tmp_path_factory, ASSET_JOB_SWEEP_INTERVAL="0.2",
                         GAIA_INSTANCE_PATH=app.instance_path)
    try:
        restarted_state = gaia(restarted)
        restarted_state.assets.use(events=RecordingEvents())
        restarted_state.assets.start_background()
        assert _wait_for(restarted, [queued, running]) == ["succeeded", "succeeded"]
        assert job_row(restarted, running).attempts == 2
    finally:
        gaia(restarted).assets.close()


def test_a_sweeper_round_runs_what_it_finds(app):
    sent = []
    stale = new_job(app, dispatched_at=gaia(app).clock.now() - timedelta(hours=2))
    assert Sweeper(app, gaia(app).settings.assets, sent.append).sweep_once() == [str(stale)]
    assert sent == [str(stale)]


def test_a_starting_sweeper_takes_up_jobs_sent_before_it_not_those_sent_since(app):
    """The first round takes every queued job a previous process left, but not one this
    process has just sent to its own pool (that one runs with its request's id)."""
    now = gaia(app).clock.now()
    left = new_job(app, dispatched_at=now - timedelta(seconds=5))
    just_sent = new_job(app, dispatched_at=now + timedelta(minutes=1))
    sent: list[str] = []
    sweeper = Sweeper(app, replace(gaia(app).settings.assets, sweep_interval=60), sent.append,
                      first_everything=True)
    sweeper.start()
    try:
        deadline = time.monotonic() + 5
        while not sent and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sweeper.stop()
    assert sent == [str(left)]
    with app.app_context():
        assert str(just_sent) in due_jobs(redispatch_after=120, everything_queued=True)  # still queued


def test_a_job_names_the_request_that_made_it_whichever_runner_takes_it_up(app):
    """A runner with no request of its own (a sweeper's, a retry's, a worker that got the job
    without its header) names the request that made the job on every line and event."""
    from gaia_app.request_ids import current_request_id

    job_id = new_job(app, request_id="made-by-7")
    seen: list[str | None] = []

    class Events(RecordingEvents):
        def publish(self, subject, payload):
            seen.append(current_request_id())

    gaia(app).assets.use(events=Events())
    outcome = []

    def runner():  # a fresh thread: no request id bound
        with app.app_context():
            outcome.append(run_job(str(job_id), "sweeper-run"))
            db.session.remove()

    thread = threading.Thread(target=runner)
    thread.start()
    thread.join(30)
    assert outcome and outcome[0].status == "succeeded"
    assert seen and set(seen) == {"made-by-7"}


class SilentGenerator(ScriptedGenerator):
    """Waits without a word, as a provider call does (no progress until it answers)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def generate(self, request, progress):
        self.calls += 1
        time.sleep(self.seconds)
        return GeneratedFile(data=b"\x89PNG\r\n\x1a\nsilent", format="png")


def test_the_heartbeat_keeps_a_silent_job_from_being_taken_over(database_url, tmp_path_factory, _session_app):
    """A generator quiet for three leases keeps its job: the heartbeat renews the lease (a
    heartbeat without the app's context once failed every renewal, and the job was taken
    over and paid for again and again)."""
    app = make_app(database_url, tmp_path_factory, ASSET_JOB_LEASE_SECONDS="0.3")
    silent = SilentGenerator(1.0)
    gaia(app).assets.use(events=RecordingEvents(), generators={"scripted": silent})
    job_id = new_job(app, provider="scripted")
    first = threading.Thread(target=run, args=(app, job_id))
    first.start()
    time.sleep(0.1)
    rivals = []
    while first.is_alive():
        rivals.append(run(app, job_id, owner="rival").status)
        time.sleep(0.1)
    first.join()
    assert set(rivals) == {"skipped"} and silent.calls == 1
    job = job_row(app, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)


def test_a_job_whose_worker_died_on_every_attempt_fails_instead_of_looping(app, recorder):
    past = gaia(app).clock.now() - timedelta(seconds=1)
    job_id = new_job(app, status="running", lease_owner="died", lease_expires_at=past, attempts=3, max_attempts=3)
    assert run(app, job_id).status == "failed"
    job = job_row(app, job_id)
    assert (job.status, job.error_kind, job.attempts) == ("failed", "worker_lost", 3)
    assert asset_of(app, job_id).status == "failed"
    assert recorder.subjects(job_id) == [events.FAILED]
    assert run(app, job_id).status == "skipped"
