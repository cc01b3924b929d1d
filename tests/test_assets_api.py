"""The asset service over HTTP: making jobs (validation, idempotency, dispatch after the
commit), following and cancelling them, listing, downloading (ranges, ETags) and deleting
assets; each user sees only their own. On SQLite and PostgreSQL, with the real runner."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from blueprints.asset import jobs as job_rules
from blueprints.asset import progress
from gaia_app import accounts
from gaia_app.extensions import db
from gaia_app.models import Asset, AssetJob
from gaia_app.state import gaia
from tests.conftest import problem_of

API = "/api/v0.2"
GENERATE = f"{API}/assets/generate"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SMALL_IMAGE = {"category": "image", "description": "a red apple", "options": {"width": 64, "height": 64}}


@pytest.fixture
def headers(make):
    def for_user(email="alice@example.com", **kwargs):
        return {"X-API-Key": make.key(email, **kwargs)}

    return for_user


@pytest.fixture
def dispatched(app, monkeypatch):
    """Dispatch recorded instead of run; each call checks its job row is already committed."""
    calls = []

    def record(job_id, *, delay=0.0):
        with db.engine.connect() as connection:
            committed = connection.execute(select(AssetJob.id).where(AssetJob.id == uuid.UUID(str(job_id)))).first()
        calls.append((str(job_id), committed is not None))

    monkeypatch.setattr(gaia(app).assets, "dispatch", record)
    return calls


def owner(email="alice@example.com"):
    """The user's id (made if they do not exist yet). Call in an app context."""
    user = accounts.find_user_by_email(email) or accounts.create_user(email)
    db.session.flush()
    return user.id


def count(model) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def add_asset(app, email="alice@example.com", *, job_status="queued", minutes=0, category="image",
              data: bytes | None = None, **fields):
    """An asset and its job written directly (no runner involved); returns (asset_id, job_id).
    With `data`, the bytes are stored and the asset is ready."""
    with app.app_context():
        when = START + timedelta(minutes=minutes)
        values = dict(user_id=owner(email), category=category, format="png", description="made by hand",
                      provider="builtin", status="pending", details={}, created_at=when, updated_at=when)
        if data is not None:
            stored = gaia(app).assets.storage.put(data, "image/png")
            values.update(status="ready", storage_key=stored.key, sha256=stored.sha256,
                          size_bytes=stored.size, content_type="image/png", details={"width": 1})
        values.update(fields)
        asset = Asset(**values)
        db.session.add(asset)
        db.session.flush()
        job = AssetJob(asset_id=asset.id, user_id=asset.user_id, status=job_status, progress=0, attempts=0,
                       max_attempts=3, request={"category": category, "provider": "builtin"},
                       cancel_requested=False, dispatched_at=datetime.now(timezone.utc),
                       created_at=when, updated_at=when)
        db.session.add(job)
        db.session.commit()
        return str(asset.id), str(job.id)


# -- making a job -------------------------------------------------------------------------


def test_generate_answers_202_with_links_and_dispatches_after_the_commit(app, client, headers, dispatched):
    response = client.post(GENERATE, json={**SMALL_IMAGE, "style": "flat", "seed": 7}, headers=headers())
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    job_id, asset_id = body["job_id"], body["asset_id"]
    assert body["status"] == "queued"
    assert body["links"] == {
        "job": f"{API}/jobs/{job_id}", "events": f"{API}/jobs/{job_id}/events",
        "cancel": f"{API}/jobs/{job_id}/cancel", "asset": f"{API}/assets/{asset_id}",
        "file": f"{API}/assets/{asset_id}/file",
    }
    assert response.headers["Location"] == f"{API}/jobs/{job_id}"
    assert dispatched == [(job_id, True)]
    with app.app_context():
        job = db.session.get(AssetJob, uuid.UUID(job_id))
        asset = db.session.get(Asset, uuid.UUID(asset_id))
        assert (asset.status, asset.category, asset.format, asset.style, asset.provider) == (
            "pending", "image", "png", "flat", "builtin")
        assert job.request == {"category": "image", "description": "a red apple", "style": "flat",
                               "options": {"width": 64, "height": 64}, "seed": 7, "provider": "builtin",
                               "max_cost": None, "estimated_cost": 0.0}
        assert job.api_key_id is not None and job.dispatched_at is not None
        assert job.max_attempts == gaia(app).settings.assets.max_attempts and len(job.request_hash) == 64

    read = client.get(f"{API}/jobs/{job_id}", headers=headers()).get_json()
    assert read["status"] == "queued" and read["category"] == "image" and read["provider"] == "builtin"
    assert read["links"]["self"] == f"{API}/jobs/{job_id}" and read["error"] is None


def test_a_seed_is_chosen_and_kept_when_none_is_given(app, client, headers, dispatched):
    job_id = client.post(GENERATE, json={"category": "audio", "description": "a bell"},
                         headers=headers()).get_json()["job_id"]
    with app.app_context():
        job = db.session.get(AssetJob, uuid.UUID(job_id))
        assert 0 <= job.request["seed"] < 2**31
        assert job.request["options"] == {"duration": 2.0, "sample_rate": 44100}


TOO_LONG = "x" * 4001


@pytest.mark.parametrize("change, field", [
    ({"colour": "red"}, "colour"),
    ({"description": "   "}, "description"),
    ({"description": TOO_LONG}, "description"),
    ({"description": 5}, "description"),
    ({"category": "video"}, "category"),
    ({"category": None}, "category"),
    ({"format": "wav"}, "format"),
    ({"format": "jpeg"}, "format"),
    ({"provider": "nobody"}, "provider"),
    ({"provider": "meshy"}, "provider"),
    ({"options": {"width": "big"}}, "options.width"),
    ({"options": {"width": 5000}}, "options.width"),
    ({"options": {"depth": 1}}, "options.depth"),
    ({"options": [1]}, "options"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**31}, "seed"),
    ({"seed": "5"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"seed": True}, "seed"),
    ({"max_cost": -0.01}, "max_cost"),
    ({"max_cost": "1"}, "max_cost"),
    ({"max_cost": True}, "max_cost"),
    ({"style": "s" * 201}, "style"),
])
def test_every_bad_input_is_named(app, client, headers, dispatched, change, field):
    body = {**SMALL_IMAGE, **change}
    problem = problem_of(client.post(GENERATE, json=body, headers=headers()), 422)
    assert field in [error["field"] for error in problem["errors"]], problem
    with app.app_context():
        assert count(AssetJob) == 0 and count(Asset) == 0
    assert dispatched == []


def test_missing_fields_and_the_format_rule_say_what_to_send(client, headers, dispatched):
    problem = problem_of(client.post(GENERATE, json={}, headers=headers()), 422)
    assert {e["field"] for e in problem["errors"]} == {"category", "description"}
    problem = problem_of(client.post(GENERATE, json={**SMALL_IMAGE, "format": "glb"}, headers=headers()), 422)
    assert '"png"' in problem["errors"][0]["message"]
    ok = client.post(GENERATE, json={**SMALL_IMAGE, "format": "png", "provider": "builtin"}, headers=headers())
    assert ok.status_code == 202


def test_a_provider_that_does_not_make_the_category_is_refused_with_the_ones_that_do(
        app, client, headers, dispatched, monkeypatch):
    monkeypatch.setattr(gaia(app).assets.generator("builtin"), "categories", ("image",))
    problem = problem_of(client.post(GENERATE, json={"category": "audio", "description": "a bell"},
                                     headers=headers()), 422)
    assert problem["errors"][0]["field"] == "provider" and "does not make audio" in problem["detail"]
    assert problem["available"] == []
    problem = problem_of(client.post(GENERATE, json={**SMALL_IMAGE, "provider": "meshy"}, headers=headers()), 422)
    assert "not configured" in problem["detail"] and problem["available"] == ["builtin"]


def test_a_max_cost_below_the_cost_is_refused_before_anything_is_stored(
        app, client, headers, dispatched, monkeypatch):
    monkeypatch.setattr(gaia(app).assets.generator("builtin"), "cost", lambda request: 0.5)
    problem = problem_of(client.post(GENERATE, json={**SMALL_IMAGE, "max_cost": 0.1}, headers=headers()), 422)
    assert problem["errors"][0]["field"] == "max_cost" and "0.5000 USD" in problem["detail"]
    with app.app_context():
        assert count(Asset) == 0 and count(AssetJob) == 0
    assert dispatched == []
    assert client.post(GENERATE, json={**SMALL_IMAGE, "max_cost": 0.5}, headers=headers()).status_code == 202


@pytest.mark.parametrize("key", ["k" * 201, "", "clé"])
def test_a_bad_idempotency_key_is_named(client, headers, dispatched, key):
    response = client.post(GENERATE, json=SMALL_IMAGE, headers={**headers(), "Idempotency-Key": key})
    problem = problem_of(response, 422)
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert problem["errors"][0]["location"] == "headers"


# -- idempotency --------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_give_the_same_job_once(app, client, headers, dispatched):
    alice = {**headers(), "Idempotency-Key": "order-42"}
    first = client.post(GENERATE, json=SMALL_IMAGE, headers=alice)
    reordered = json.dumps(dict(reversed(list(SMALL_IMAGE.items()))), indent=2)
    again = client.post(GENERATE, data=reordered, content_type="application/json", headers=alice)
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json() and again.headers["Location"] == first.headers["Location"]
    assert len(dispatched) == 1
    with app.app_context():
        assert count(AssetJob) == 1 and count(Asset) == 1

    other_body = client.post(GENERATE, json={**SMALL_IMAGE, "description": "a green apple"}, headers=alice)
    problem = problem_of(other_body, 409)
    assert problem["job_id"] == first.get_json()["job_id"]
    # Keys belong to their user: Bob's "order-42" is his own.
    bob = client.post(GENERATE, json=SMALL_IMAGE, headers={**headers("bob@example.com"), "Idempotency-Key": "order-42"})
    assert bob.status_code == 202 and bob.get_json()["job_id"] != first.get_json()["job_id"]


def test_a_racing_request_with_the_same_key_answers_as_the_first_did(
        app, client, headers, dispatched, monkeypatch):
    alice = {**headers(), "Idempotency-Key": "race"}
    first = client.post(GENERATE, json=SMALL_IMAGE, headers=alice).get_json()
    # The second request looks before the first has committed: it sees no job, inserts, and
    # the unique constraint refuses its row.
    real = job_rules._existing
    looks = []

    def not_yet(user_id, key):
        looks.append(key)
        return None if len(looks) == 1 else real(user_id, key)

    monkeypatch.setattr(job_rules, "_existing", not_yet)
    second = client.post(GENERATE, json=SMALL_IMAGE, headers=alice)
    assert second.status_code == 202 and second.get_json() == first and len(looks) == 2
    conflicting = client.post(GENERATE, json={**SMALL_IMAGE, "seed": 1}, headers=alice)
    assert conflicting.status_code == 409
    looks.clear()
    monkeypatch.setattr(job_rules, "_existing", not_yet)
    assert problem_of(client.post(GENERATE, json={**SMALL_IMAGE, "seed": 1}, headers=alice), 409)
    with app.app_context():
        assert count(AssetJob) == 1 and count(Asset) == 1
    assert len(dispatched) == 1


# -- who may see what ---------------------------------------------------------------------


def _routes(asset_id, job_id):
    return [
        ("GET", f"{API}/jobs/{job_id}"), ("GET", f"{API}/jobs/{job_id}/events"),
        ("POST", f"{API}/jobs/{job_id}/cancel"), ("GET", f"{API}/assets/{asset_id}"),
        ("GET", f"{API}/assets/{asset_id}/file"), ("HEAD", f"{API}/assets/{asset_id}/file"),
        ("DELETE", f"{API}/assets/{asset_id}"),
    ]


def test_credentials_and_the_assets_scope_are_required(app, client, headers):
    asset_id, job_id = add_asset(app)
    chat_only = headers("alice@example.com", scopes=["chat"])
    everything = [("POST", GENERATE), ("GET", f"{API}/jobs"), ("GET", f"{API}/assets")] + _routes(asset_id, job_id)
    for method, url in everything:
        response = client.open(url, method=method, json=SMALL_IMAGE if url == GENERATE else None)
        assert response.status_code == 401, (method, url)
        response = client.open(url, method=method, headers=chat_only,
                               json=SMALL_IMAGE if url == GENERATE else None)
        assert response.status_code == 403, (method, url)
        if method != "HEAD":
            assert "assets" in response.get_json()["detail"]


def test_someone_elses_job_and_asset_are_not_found_on_every_route(app, client, headers):
    asset_id, job_id = add_asset(app, data=b"alice's")
    bob = headers("bob@example.com")
    for method, url in _routes(asset_id, job_id) + _routes(uuid.uuid4(), uuid.uuid4()):
        response = client.open(url, method=method, headers=bob)
        assert response.status_code == 404, (method, url, response.get_data(as_text=True))
        if method != "HEAD":
            problem_of(response, 404)
    for method, url in _routes("not-a-uuid", "12345"):
        assert client.open(url, method=method, headers=bob).status_code == 404
    listed = client.get(f"{API}/jobs", headers=bob).get_json()
    assert listed == {"jobs": [], "next_cursor": None}
    assert client.get(f"{API}/assets", headers=bob).get_json() == {"assets": [], "next_cursor": None}
    with app.app_context():
        assert count(Asset) == 1 and count(AssetJob) == 1


# -- cancelling ---------------------------------------------------------------------------


def test_cancel_a_queued_job_at_once_and_a_finished_one_not_at_all(app, client, headers):
    alice = headers()
    asset_id, job_id = add_asset(app)
    cancelled = client.post(f"{API}/jobs/{job_id}/cancel", headers=alice)
    assert cancelled.status_code == 200, cancelled.get_data(as_text=True)
    job = cancelled.get_json()
    assert job["status"] == "cancelled" and job["error_kind"] == "cancelled" and job["finished_at"]
    assert client.get(f"{API}/assets/{asset_id}", headers=alice).get_json()["status"] == "failed"
    problem = problem_of(client.post(f"{API}/jobs/{job_id}/cancel", headers=alice), 409)
    assert "already cancelled" in problem["detail"] and problem["job_status"] == "cancelled"

    _, done = add_asset(app, job_status="succeeded")
    assert "already succeeded" in problem_of(client.post(f"{API}/jobs/{done}/cancel", headers=alice), 409)["detail"]


def test_cancel_a_running_job_asks_its_worker_to_stop(app, client, headers):
    alice = headers()
    _, job_id = add_asset(app, job_status="running")
    response = client.post(f"{API}/jobs/{job_id}/cancel", json={}, headers=alice)
    assert response.status_code == 202
    assert response.get_json()["status"] == "running" and response.get_json()["cancel_requested"] is True
    with app.app_context():
        assert db.session.get(AssetJob, uuid.UUID(job_id)).cancel_requested is True


def test_cancel_takes_no_body(app, client, headers):
    _, job_id = add_asset(app)
    for body in ('{"reason": "bored"}', "[]", "not json"):
        response = client.post(f"{API}/jobs/{job_id}/cancel", data=body, content_type="application/json",
                               headers=headers())
        assert "takes no request body" in problem_of(response, 400)["detail"]
    with app.app_context():
        assert db.session.get(AssetJob, uuid.UUID(job_id)).status == "queued"


# -- lists --------------------------------------------------------------------------------


def test_jobs_and_assets_are_listed_newest_first_in_pages_with_filters(app, client, headers):
    alice = headers()
    made = [add_asset(app, minutes=i, category="audio" if i % 2 else "image",
                      job_status="succeeded" if i == 4 else "queued") for i in range(5)]
    add_asset(app, "bob@example.com")

    seen, cursor = [], None
    while True:
        page = client.get(f"{API}/jobs", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})},
                          headers=alice).get_json()
        assert len(page["jobs"]) <= 2
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [job_id for _, job_id in reversed(made)]

    audio = client.get(f"{API}/jobs?category=audio", headers=alice).get_json()["jobs"]
    assert [job["id"] for job in audio] == [made[3][1], made[1][1]]
    done = client.get(f"{API}/jobs?status=succeeded", headers=alice).get_json()["jobs"]
    assert [job["id"] for job in done] == [made[4][1]]

    assets = client.get(f"{API}/assets?limit=3", headers=alice).get_json()
    assert [a["id"] for a in assets["assets"]] == [asset_id for asset_id, _ in reversed(made)][:3]
    assert assets["assets"][0]["job_id"] == made[4][1] and assets["assets"][0]["links"]["job"].endswith(made[4][1])
    rest = client.get(f"{API}/assets", query_string={"cursor": assets["next_cursor"]}, headers=alice).get_json()
    assert [a["id"] for a in rest["assets"]] == [made[1][0], made[0][0]] and rest["next_cursor"] is None
    images = client.get(f"{API}/assets?category=image&status=pending", headers=alice).get_json()["assets"]
    assert [a["id"] for a in images] == [made[4][0], made[2][0], made[0][0]]

    for query, field in (("status=done", "status"), ("category=video", "category"), ("limit=0", "limit"),
                         ("cursor=abc", "cursor"), ("cursor=%21", "cursor")):
        for path in ("jobs", "assets"):
            problem = problem_of(client.get(f"{API}/{path}?{query}", headers=alice), 422)
            assert problem["errors"][0]["field"] == field, (path, query)


# -- the file -----------------------------------------------------------------------------


def test_a_ready_asset_downloads_whole_in_ranges_and_conditionally(app, client, headers):
    alice = headers()
    data = bytes(range(256)) * 4
    asset_id, _ = add_asset(app, data=data)
    url = f"{API}/assets/{asset_id}/file"
    etag = f'"{hashlib.sha256(data).hexdigest()}"'

    whole = client.get(url, headers=alice)
    assert whole.status_code == 200 and whole.data == data
    assert whole.headers["Content-Type"] == "image/png" and whole.headers["Content-Length"] == str(len(data))
    assert whole.headers["ETag"] == etag and whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["Content-Disposition"] == f'attachment; filename="{asset_id}.png"'
    assert whole.headers["Cache-Control"].startswith("private, max-age=")

    part = client.get(url, headers={**alice, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}" and part.headers["Content-Length"] == "10"
    tail = client.get(url, headers={**alice, "Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.data == data[-5:]
    assert client.get(url, headers={**alice, "Range": "bytes=1020-5000"}).data == data[1020:]
    several = client.get(url, headers={**alice, "Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.data == data

    beyond = client.get(url, headers={**alice, "Range": f"bytes={len(data)}-"})
    problem_of(beyond, 416)
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"

    same = client.get(url, headers={**alice, "If-None-Match": f'"other", W/{etag}'})
    assert same.status_code == 304 and same.data == b"" and same.headers["ETag"] == etag
    assert client.get(url, headers={**alice, "If-None-Match": '"other"'}).status_code == 200
    stale = client.get(url, headers={**alice, "Range": "bytes=0-1", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.data == data
    fresh = client.get(url, headers={**alice, "Range": "bytes=0-1", "If-Range": etag})
    assert fresh.status_code == 206 and fresh.data == data[:2]

    head = client.head(url, headers={**alice, "Range": "bytes=0-99"})
    assert head.status_code == 206 and head.data == b"" and head.headers["Content-Length"] == "100"

    detail = client.get(f"{API}/assets/{asset_id}", headers=alice).get_json()
    assert detail["size_bytes"] == len(data) and detail["sha256"] == etag.strip('"')
    assert detail["links"] == {"self": f"{API}/assets/{asset_id}", "file": url, "job": detail["links"]["job"]}


def test_an_asset_that_is_not_ready_has_no_file_yet(app, client, headers):
    pending, _ = add_asset(app)
    failed, _ = add_asset(app, status="failed", job_status="failed")
    problem = problem_of(client.get(f"{API}/assets/{pending}/file", headers=headers()), 409)
    assert "is pending" in problem["detail"] and problem["asset_status"] == "pending"
    assert "is failed" in problem_of(client.get(f"{API}/assets/{failed}/file", headers=headers()), 409)["detail"]


def test_delete_removes_the_file_only_when_no_asset_uses_it(app, client, headers):
    alice = headers()
    shared = b"the same bytes"
    first, first_job = add_asset(app, data=shared)
    second, _ = add_asset(app, "bob@example.com", data=shared)
    storage = gaia(app).assets.storage
    key = hashlib.sha256(shared).hexdigest()

    assert client.delete(f"{API}/assets/{first}", headers=alice).status_code == 204
    assert storage.exists(key)
    assert client.get(f"{API}/assets/{first}", headers=alice).status_code == 404
    assert client.get(f"{API}/jobs/{first_job}", headers=alice).status_code == 404
    with app.app_context():
        assert db.session.get(AssetJob, uuid.UUID(first_job)) is None

    assert client.delete(f"{API}/assets/{second}", headers=headers("bob@example.com")).status_code == 204
    assert not storage.exists(key)
    assert client.delete(f"{API}/assets/{second}", headers=headers("bob@example.com")).status_code == 404


# -- following a job ----------------------------------------------------------------------


def _events(response):
    """The stream's pieces, one at a time, as (event name or comment, data)."""
    for chunk in response.response:
        text = chunk.decode()
        if text.startswith(":"):
            yield text.strip(), None
            continue
        lines = dict(line.split(": ", 1) for line in text.strip().split("\n"))
        yield lines["event"], json.loads(lines["data"])


def _set(app, job_id, **values):
    with app.app_context():
        db.session.execute(db.update(AssetJob).where(AssetJob.id == uuid.UUID(job_id)).values(**values))
        db.session.commit()


def test_events_follow_a_job_until_it_ends(app, client, headers, monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.01)
    monkeypatch.setattr(progress, "KEEPALIVE_INTERVAL", 0.05)
    alice = headers()
    _, job_id = add_asset(app)
    response = client.get(f"{API}/jobs/{job_id}/events", headers=alice, buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    stream = _events(response)
    assert next(stream) == ("progress", client.get(f"{API}/jobs/{job_id}", headers=alice).get_json())
    assert next(stream) == (": keepalive", None)
    _set(app, job_id, status="running", progress=40)
    name, job = next(stream)
    assert (name, job["status"], job["progress"]) == ("progress", "running", 40)
    _set(app, job_id, status="succeeded", progress=100)
    name, job = next(stream)
    assert (name, job["status"], job["progress"]) == ("succeeded", "succeeded", 100)
    assert list(stream) == []
    response.close()

    finished = client.get(f"{API}/jobs/{job_id}/events", headers=alice)
    assert list(_events(finished)) == [("succeeded", job)]


def test_events_end_when_the_job_goes_or_the_time_bound_is_reached(app, client, headers, monkeypatch):
    monkeypatch.setattr(progress, "POLL_INTERVAL", 0.01)
    alice = headers()
    asset_id, job_id = add_asset(app)
    response = client.get(f"{API}/jobs/{job_id}/events", headers=alice, buffered=False)
    stream = _events(response)
    assert next(stream)[0] == "progress"
    assert client.delete(f"{API}/assets/{asset_id}", headers=alice).status_code == 204
    assert list(stream) == [("deleted", {"id": job_id})]

    monkeypatch.setattr(progress, "MAX_STREAM_SECONDS", 0.05)
    _, job_id = add_asset(app)
    pieces = list(_events(client.get(f"{API}/jobs/{job_id}/events", headers=alice)))
    assert pieces[0][0] == "progress" and pieces[-1][0].startswith(": reconnect")


# -- end to end, with the real runner -------------------------------------------------------


def _wait_for(client, job_url, alice, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(job_url, headers=alice).get_json()
        if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_a_job_runs_and_its_file_downloads(app, client, headers, monkeypatch):
    monkeypatch.setattr(progress, "MAX_STREAM_SECONDS", 20.0)  # a broken runner fails, not hangs
    alice = headers()
    accepted = client.post(GENERATE, json={**SMALL_IMAGE, "seed": 3}, headers={**alice, "Idempotency-Key": "e2e"})
    assert accepted.status_code == 202
    links = accepted.get_json()["links"]

    followed = list(_events(client.get(links["events"], headers=alice)))
    assert followed[-1][0] == "succeeded", followed
    job = _wait_for(client, links["job"], alice)
    assert job["status"] == "succeeded" and job["progress"] == 100 and job["attempts"] == 1
    assert job["started_at"] and job["finished_at"]

    asset = client.get(links["asset"], headers=alice).get_json()
    assert asset["status"] == "ready" and asset["content_type"] == "image/png"
    assert asset["details"]["width"] == 64 and asset["cost"] == 0.0
    file = client.get(links["file"], headers=alice)
    assert file.status_code == 200 and file.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert hashlib.sha256(file.data).hexdigest() == asset["sha256"] and len(file.data) == asset["size_bytes"]

    # The same request again (same key) is the same job; its file is ready already.
    again = client.post(GENERATE, json={**SMALL_IMAGE, "seed": 3}, headers={**alice, "Idempotency-Key": "e2e"})
    assert again.status_code == 202 and again.get_json()["status"] == "succeeded"
    assert again.get_json()["job_id"] == accepted.get_json()["job_id"]
    assert problem_of(client.post(links["cancel"], headers=alice), 409)

    # A new request with the same seed makes the same bytes (stored once).
    other = client.post(GENERATE, json={**SMALL_IMAGE, "seed": 3}, headers=alice).get_json()
    assert _wait_for(client, other["links"]["job"], alice)["status"] == "succeeded"
    assert client.get(other["links"]["asset"], headers=alice).get_json()["sha256"] == asset["sha256"]
    assert client.delete(links["asset"], headers=alice).status_code == 204
    assert client.get(other["links"]["file"], headers=alice).data == file.data


def test_a_new_job_answers_queued_even_when_a_runner_is_quicker_than_the_answer(app, client, headers, monkeypatch):
    """The answer is shaped before the commit sends the job: a runner that finishes the job
    before the response is written (here: at once, in the same thread) does not show through."""
    from gaia_app.jobs.runner import run_job

    def run_at_once(job_id, *, delay=0.0):
        def run():
            with app.app_context():
                run_job(str(job_id), "at-once")
                db.session.remove()

        runner = threading.Thread(target=run)
        runner.start()
        runner.join()

    monkeypatch.setattr(gaia(app).assets, "dispatch", run_at_once)
    body = client.post(GENERATE, json=SMALL_IMAGE, headers=headers()).get_json()
    assert body["status"] == "queued"
    assert client.get(f"{API}/jobs/{body['job_id']}", headers=headers()).get_json()["status"] == "succeeded"
