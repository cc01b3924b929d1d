"""Request and response bodies of the asset service: generation requests, jobs and assets.

Body fields take JSON's own types (`JSONInteger`, `JSONNumber`, `SafeString`); unknown body
fields are refused by name, never dropped. The links every answer carries are paths on this
API, built here from the ids (`job_links`, `asset_links`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping

from marshmallow import Schema, ValidationError, fields, pre_dump, validate, validates_schema

from blueprints.asset.jobs import MAX_SEED
from gaia_app.constants import API_PREFIX
from gaia_app.generators.base import CATEGORY_FORMATS
from gaia_app.schemas import NOT_BLANK, JSONInteger, JSONNumber, SafeString, cursor_field

CATEGORIES = tuple(CATEGORY_FORMATS)
FORMATS = tuple(sorted(set(CATEGORY_FORMATS.values())))
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")
ASSET_STATUSES = ("pending", "ready", "failed")
MAX_OPTIONS = 32
MAX_OPTIONS_BYTES = 8 * 1024
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


# -- links ------------------------------------------------------------------------------


def job_links(job_id: uuid.UUID, asset_id: uuid.UUID) -> dict[str, str]:
    job = f"{API_PREFIX}/jobs/{job_id}"
    asset = f"{API_PREFIX}/assets/{asset_id}"
    return {"self": job, "events": f"{job}/events", "cancel": f"{job}/cancel",
            "asset": asset, "file": f"{asset}/file"}


def asset_links(asset_id: uuid.UUID, job_id: uuid.UUID | None) -> dict[str, str | None]:
    asset = f"{API_PREFIX}/assets/{asset_id}"
    return {"self": asset, "file": f"{asset}/file",
            "job": f"{API_PREFIX}/jobs/{job_id}" if job_id else None}


# -- requests ---------------------------------------------------------------------------


def _has_text(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


def _options_fit(options: dict) -> None:
    if len(options) > MAX_OPTIONS:
        raise ValidationError(f"At most {MAX_OPTIONS} options.")
    size = len(json.dumps(options, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_OPTIONS_BYTES:
        raise ValidationError(f"The options take {size} bytes as JSON; at most {MAX_OPTIONS_BYTES}.")


class GenerateSchema(Schema):
    category = SafeString(required=True, validate=validate.OneOf(CATEGORIES))
    description = SafeString(
        required=True, validate=[validate.Length(min=1), _has_text],
        metadata={**NOT_BLANK, "description": "What to make; at most ASSET_MAX_DESCRIPTION_CHARS "
                                              "characters (4000 unless configured)"},
    )
    style = SafeString(allow_none=True, validate=validate.Length(max=200))
    format = SafeString(
        allow_none=True, validate=validate.OneOf(FORMATS),
        metadata={"description": "If given, the category's one format: png for image and "
                                 "texture, wav for audio, glb for model3d"},
    )
    provider = SafeString(
        allow_none=True, validate=validate.Length(min=1, max=64),
        metadata={"description": "An asset provider configured here that makes this category; "
                                 "default: ASSET_DEFAULT_PROVIDER"},
    )
    options = fields.Dict(
        keys=SafeString(validate=validate.Length(min=1, max=100)), values=fields.Raw(allow_none=True),
        allow_none=True, validate=_options_fit,
        metadata={"description": "The provider's options for this category (the built-in one: "
                                 "image width/height, texture size, audio duration/sample_rate, "
                                 "model3d detail)"},
    )
    max_cost = JSONNumber(
        allow_none=True, validate=validate.Range(min=0),
        metadata={"description": "Refuse (422) rather than spend more than this many USD"},
    )
    seed = JSONInteger(
        allow_none=True, validate=validate.Range(min=0, max=MAX_SEED),
        metadata={"description": "The same seed and request make the same file; default: random"},
    )

    @validates_schema
    def format_of_category(self, data, **kwargs):
        wanted = CATEGORY_FORMATS.get(data.get("category"))
        given = data.get("format")
        if wanted and given is not None and given != wanted:
            raise ValidationError(
                f"A {data['category']} is delivered as {wanted}: send \"{wanted}\" or leave format out.",
                "format",
            )


class IdempotencyHeaderSchema(Schema):
    idempotency_key = fields.String(
        data_key=IDEMPOTENCY_KEY_HEADER,
        validate=[validate.Length(min=1, max=200),
                  validate.Regexp(r"^[\x20-\x7e]+$", error="Only printable ASCII characters.")],
        metadata={"description": "Repeat a request safely: the same key with the same body "
                                 "answers with the job it made (the same key with another body "
                                 "is 409). 1 to 200 printable ASCII characters, per user."},
    )


class PageQuerySchema(Schema):
    limit = fields.Integer(validate=validate.Range(min=1, max=200))
    cursor = cursor_field()
    category = fields.String(validate=validate.OneOf(CATEGORIES))


class JobListQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))


class AssetListQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(ASSET_STATUSES))


# -- answers ----------------------------------------------------------------------------


class JobLinksSchema(Schema):
    self = SafeString()
    events = SafeString(metadata={"description": "Server-sent events of its progress"})
    cancel = SafeString(metadata={"description": "POST here to cancel it"})
    asset = SafeString()
    file = SafeString(metadata={"description": "The file, once the job succeeded"})


class AcceptedLinksSchema(Schema):
    job = SafeString(metadata={"description": "Where the job is (also the Location header)"})
    events = SafeString(metadata={"description": "Server-sent events of its progress"})
    cancel = SafeString(metadata={"description": "POST here to cancel it"})
    asset = SafeString()
    file = SafeString(metadata={"description": "The file, once the job succeeded"})


class AcceptedSchema(Schema):
    asset_id = fields.UUID()
    job_id = fields.UUID()
    status = SafeString(metadata={"description": "queued when just made; a repeated request "
                                                 "(same Idempotency-Key) shows where the job is now"})
    links = fields.Nested(AcceptedLinksSchema)

    @pre_dump
    def add_links(self, job, **kwargs):
        return job if isinstance(job, Mapping) else accepted_view(job)


def accepted_view(job) -> dict:
    """The 202 answer for `job`, as it stands now."""
    links = job_links(job.id, job.asset_id)
    links["job"] = links.pop("self")
    return {"asset_id": job.asset_id, "job_id": job.id, "status": job.status, "links": links}


class JobSchema(Schema):
    id = fields.UUID()
    asset_id = fields.UUID()
    status = SafeString(metadata={"description": " | ".join(JOB_STATUSES)})
    progress = fields.Integer(metadata={"description": "0 to 100"})
    attempts = fields.Integer()
    max_attempts = fields.Integer()
    cancel_requested = fields.Boolean(metadata={"description": "A cancel reached it while it ran"})
    error = SafeString(allow_none=True)
    error_kind = SafeString(allow_none=True)
    category = SafeString()
    provider = SafeString()
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    links = fields.Nested(JobLinksSchema)

    @pre_dump
    def from_row(self, job, **kwargs):
        if isinstance(job, Mapping):
            return job
        view = {name: getattr(job, name) for name in self.fields
                if name not in ("category", "provider", "links")}
        asked = job.request or {}
        view.update(category=asked.get("category"), provider=asked.get("provider"),
                    links=job_links(job.id, job.asset_id))
        return view


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    next_cursor = SafeString(allow_none=True)


class AssetLinksSchema(Schema):
    self = SafeString()
    file = SafeString(metadata={"description": "The bytes, once the asset is ready"})
    job = SafeString(allow_none=True)


class AssetSchema(Schema):
    id = fields.UUID()
    category = SafeString()
    format = SafeString()
    status = SafeString(metadata={"description": " | ".join(ASSET_STATUSES)})
    description = SafeString()
    style = SafeString(allow_none=True)
    provider = SafeString()
    content_type = SafeString(allow_none=True)
    size_bytes = fields.Integer(allow_none=True)
    sha256 = SafeString(allow_none=True)
    details = fields.Dict(metadata={"description": "What is known of the file: width/height, "
                                                   "duration_s, vertices ..."})
    cost = fields.Float(allow_none=True, metadata={"description": "USD"})
    created_at = fields.DateTime()
    job_id = fields.UUID(allow_none=True)
    links = fields.Nested(AssetLinksSchema)

    @pre_dump
    def from_record(self, record, **kwargs):
        """`record` is an `assets.AssetRecord`: the row and the id of its job."""
        if isinstance(record, Mapping):
            return record
        asset = record.asset
        view = {name: getattr(asset, name) for name in self.fields if name not in ("job_id", "links")}
        view.update(details=asset.details or {}, job_id=record.job_id,
                    links=asset_links(asset.id, record.job_id))
        return view


class AssetListSchema(Schema):
    assets = fields.List(fields.Nested(AssetSchema))
    next_cursor = SafeString(allow_none=True)
