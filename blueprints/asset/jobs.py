"""Generation jobs: making one (with its asset, at most once per Idempotency-Key), reading,
listing and cancelling them. Each belongs to one user; nobody else can tell it exists.

A job row is the system of record: it is committed before any runner hears of it (the
dispatch waits for the commit), and its status only moves by conditional updates, so a cancel
racing a worker never turns a finished job back.

A new job's two rows are written by `job_rows` (on PostgreSQL one statement, which commits
them itself when the request holds no transaction yet); other writes flush; the route
commits, and the job is sent once it has.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from blueprints.asset import job_rows
from blueprints.asset.assets import after_commit, newest_first
from gaia_app.errors import Conflict, InvalidField, NotFound
from gaia_app.extensions import db, first_or_404
from gaia_app.generators.base import CATEGORY_FORMATS, GenerationRequest, OptionError
from gaia_app.identity.principal import Principal
from gaia_app.jobs import control
from gaia_app.models import Asset, AssetJob, utcnow
from gaia_app.request_ids import current_request_id

if TYPE_CHECKING:
    from gaia_app.jobs.runtime import AssetRuntime

MAX_SEED = 2**31 - 1


def request_hash(body: dict[str, Any]) -> str:
    """SHA-256 of the body's canonical JSON (sorted keys, no spaces): the same request,
    however its fields were ordered or spaced, has the same hash."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- making one -------------------------------------------------------------------------


def _providers_for(runtime: AssetRuntime, category: str) -> list[str]:
    """The configured providers that make `category`, in their configured order."""
    return [gid for gid in runtime.settings.generator_ids if category in runtime.generator(gid).categories]


def _checked_request(runtime: AssetRuntime, body: dict[str, Any]) -> dict[str, Any]:
    """What the job will make, every rule applied; InvalidField naming what breaks one.
    Nothing is stored yet."""
    settings = runtime.settings
    category, description = body["category"], body["description"]
    if len(description) > settings.max_description_chars:
        raise InvalidField("description", f"At most {settings.max_description_chars} characters; "
                                          f"this one has {len(description)}.")
    provider = body.get("provider") or settings.default_generator
    able = _providers_for(runtime, category)
    if provider not in able:
        why = "is not configured here" if provider not in settings.generator_ids else f"does not make {category}"
        raise InvalidField("provider", f"The asset provider {provider!r} {why}; for {category}: "
                                       f"{', '.join(able) or 'none is configured'}.", available=able)
    generator = runtime.generator(provider)
    try:
        options = generator.check_options(category, body.get("options") or {})
    except OptionError as error:
        name = error.option if error.option == "options" else f"options.{error.option}"
        raise InvalidField(name, error.message) from None
    seed = body.get("seed")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED + 1)
    style = body.get("style")
    max_cost = body.get("max_cost")
    cost = generator.cost(GenerationRequest(category=category, description=description,
                                            seed=seed, style=style, options=options))
    if max_cost is not None and cost > max_cost:
        raise InvalidField("max_cost", f"This request costs {cost:.4f} USD with {provider}, "
                                       f"more than max_cost ({max_cost:g}).", cost=cost)
    # The seed is kept, so that another attempt makes the same file.
    return {"category": category, "description": description, "style": style, "options": options,
            "seed": seed, "provider": provider, "max_cost": max_cost, "estimated_cost": cost}


@dataclass(frozen=True)
class NewJob:
    """What the 202 answer says of a job: made now, or found by its Idempotency-Key."""

    id: uuid.UUID
    asset_id: uuid.UUID
    status: str


def _existing(user_id: uuid.UUID, idempotency_key: str) -> Row | None:
    """The job this user made with this key, as the columns a replay needs (or None)."""
    return db.session.execute(
        db.select(AssetJob.id, AssetJob.asset_id, AssetJob.status, AssetJob.request_hash)
        .where(AssetJob.user_id == user_id, AssetJob.idempotency_key == idempotency_key)
    ).one_or_none()


def _replay(job: Row, body_hash: str) -> NewJob:
    if job.request_hash != body_hash:
        raise Conflict(
            "This Idempotency-Key was already used with another request body; use a new key "
            f"for a new request (the first one made job {job.id}).", job_id=str(job.id),
        )
    return NewJob(job.id, job.asset_id, job.status)


def _rows(principal: Principal, asked: dict[str, Any], idempotency_key: str | None, body_hash: str,
          max_attempts: int, now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The new asset's and job's columns, every value made here (ids included)."""
    asset_id, made_at = uuid.uuid4(), utcnow()
    asset = {"id": asset_id, "user_id": principal.user_id, "status": "pending", "category": asked["category"],
             "format": CATEGORY_FORMATS[asked["category"]], "description": asked["description"],
             "style": asked["style"], "provider": asked["provider"], "details": {},
             "created_at": made_at, "updated_at": made_at}
    job = {"id": uuid.uuid4(), "asset_id": asset_id, "user_id": principal.user_id,
           "api_key_id": principal.key_id, "status": "queued", "request": asked,
           "idempotency_key": idempotency_key, "request_hash": body_hash, "request_id": current_request_id(),
           "max_attempts": max_attempts,
           "progress": 0, "attempts": 0, "cancel_requested": False, "dispatched_at": now,
           "created_at": made_at, "updated_at": made_at}
    return asset, job


def create_job(principal: Principal, runtime: AssetRuntime, body: dict[str, Any],
               idempotency_key: str | None, now: datetime) -> tuple[NewJob, bool]:
    """A queued job and its pending asset, sent to a runner once committed. Returns (job,
    made): with an Idempotency-Key already used for the same body, the job it made then and
    False; for another body, Conflict. Two requests racing with one key: the unique
    constraint lets one insert, and the other answers with its job."""
    body_hash = request_hash(body)
    session = db.session()  # this request's Session (the scoped proxy lacks in_transaction)
    if idempotency_key is not None:
        job_rows.begin(session)
        found = _existing(principal.user_id, idempotency_key)
        if found is not None:
            return _replay(found, body_hash), False
    asked = _checked_request(runtime, body)
    asset, job = _rows(principal, asked, idempotency_key, body_hash, runtime.settings.max_attempts, now)
    try:
        job_rows.insert_job(session, asset, job)
    except IntegrityError:
        session.rollback()
        found = _existing(principal.user_id, idempotency_key) if idempotency_key is not None else None
        if found is None:
            raise
        return _replay(found, body_hash), False
    job_id = job["id"]
    after_commit(session, lambda: runtime.dispatch(job_id))
    return NewJob(job_id, asset["id"], "queued"), True


# -- reading ----------------------------------------------------------------------------


def get_job(user_id: uuid.UUID, job_id: uuid.UUID | str) -> AssetJob:
    return first_or_404(lambda parsed: db.select(AssetJob).where(AssetJob.id == parsed, AssetJob.user_id == user_id),
                        job_id, NotFound(f"No job {job_id} among yours."))[0]


def list_jobs(user_id: uuid.UUID, *, status: str | None = None, category: str | None = None,
              limit: int | None = None, cursor: str | None = None) -> tuple[list[AssetJob], str | None]:
    """One page of the user's jobs, newest first."""
    query = db.select(AssetJob).where(AssetJob.user_id == user_id)
    if status:
        query = query.where(AssetJob.status == status)
    if category:
        query = query.join(Asset, Asset.id == AssetJob.asset_id).where(Asset.category == category)
    rows, next_cursor = newest_first(query, AssetJob, limit, cursor)
    return [row[0] for row in rows], next_cursor


# -- cancelling -------------------------------------------------------------------------


def cancel_job(user_id: uuid.UUID, job_id: uuid.UUID | str, now: datetime) -> tuple[AssetJob, bool]:
    """Cancel one of the user's jobs (`gaia_app.jobs.control.cancel`). Returns (job,
    stopped): True when a queued job was cancelled at once, False when a running one was
    asked to stop. A finished job: Conflict."""
    job = get_job(user_id, job_id)
    return job, control.cancel(job, now)
