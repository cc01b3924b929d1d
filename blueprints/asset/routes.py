"""Routes of the asset service: generation jobs and the assets (files) they make."""

from __future__ import annotations

import json

from flask import Response, current_app, request

from blueprints.asset import assets, jobs, progress
from blueprints.asset.schemas import (
    FINISHED_STATUSES,
    AcceptedSchema,
    AssetListQuerySchema,
    AssetListSchema,
    AssetSchema,
    GenerateSchema,
    IdempotencyHeaderSchema,
    JobListQuerySchema,
    JobListSchema,
    JobSchema,
    accepted_view,
    job_links,
)
from gaia_app import json_body
from gaia_app.blueprint import Blueprint
from gaia_app.constants import API_PREFIX
from gaia_app.errors import InvalidRequest
from gaia_app.extensions import commits, release_connection
from gaia_app.identity import current_principal, require_auth
from gaia_app.state import gaia

blp = Blueprint("asset", __name__, url_prefix=API_PREFIX,
                description="Asset generation: jobs, their progress, and the files they make")

_JOB = JobSchema()
_FILE = {"schema": {"type": "string", "format": "binary"}}
_FILE_CONTENT = {kind: _FILE for kind in ("image/png", "audio/wav", "model/gltf-binary")}
_FILE_HEADERS = [
    {"in": "header", "name": "Range", "required": False, "schema": {"type": "string"},
     "description": "One byte range (`bytes=0-1023`, `bytes=-500`); several are answered whole"},
    {"in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
     "description": "The ETag you hold: 304 when the file is the same"},
    {"in": "header", "name": "If-Range", "required": False, "schema": {"type": "string"},
     "description": "Send the range only if the file still has this ETag, else the whole file"},
]

# One event of a job's stream (Open API 3.1: the event-stream's schema describes each event).
_JOB_EVENT = {
    "type": "object",
    "description": "`event: progress` with the job's JSON at once and at each change (with "
                   "`: keepalive` comments between), then one `event: succeeded|failed|cancelled` "
                   "with the job's JSON, or `event: deleted` if its asset is deleted; the stream "
                   "then ends",
    "properties": {
        "event": {"type": "string", "enum": ["progress", *FINISHED_STATUSES, "deleted"]},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "The job, as GET /jobs/{job_id} answers (`{\"id\"}` for deleted)"},
    },
    "required": ["event", "data"],
}


def _no_body() -> None:
    """Routes that take no body: none, or `{}`. Anything else is refused, not ignored."""
    data = json_body.request_body(request)
    if not data.strip():
        return
    try:
        value = json_body.loads(data)
    except json.JSONDecodeError:
        value = None
    if value != {}:
        raise InvalidRequest("This route takes no request body (send none, or {}).")


# -- jobs -------------------------------------------------------------------------------


@blp.route("/assets/generate", methods=["POST"])
@require_auth("assets")
@blp.arguments(IdempotencyHeaderSchema(), location="headers", as_kwargs=True)
@blp.arguments(GenerateSchema())
@blp.response(202, AcceptedSchema, headers={"Location": {
    "description": "The job", "schema": {"type": "string"}}})
@blp.doc(responses={"409": {"description": "The Idempotency-Key was used with another body"}})
@commits
def generate_asset(body, idempotency_key=None):
    """Start making an asset: answers at once with its job, whatever the provider's speed.

    Follow the job (`links.job`, or its server-sent events at `links.events`); the file is at
    `links.file` once the job succeeded. With an `Idempotency-Key`, repeating the request
    answers with the job it made the first time (the same key with another body is 409).
    """
    state = gaia()
    job, _ = jobs.create_job(current_principal(), state.assets, body, idempotency_key, state.clock.now())
    # Shaped now, before the commit sends the job: a new job answers "queued" even when a
    # runner has taken it by the time the answer is written.
    answer = accepted_view(job)
    return answer, 202, {"Location": job_links(job.id, job.asset_id)["self"]}


@blp.route("/jobs")
@require_auth("assets")
@blp.arguments(JobListQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, JobListSchema)
def list_jobs(**query):
    """Your generation jobs, newest first."""
    rows, next_cursor = jobs.list_jobs(current_principal().user_id, **query)
    return {"jobs": rows, "next_cursor": next_cursor}


@blp.route("/jobs/<uuid:job_id>")
@require_auth("assets")
@blp.response(200, JobSchema)
def get_job(job_id):
    """One of your jobs: its status, progress, attempts and error."""
    return jobs.get_job(current_principal().user_id, job_id)


@blp.route("/jobs/<uuid:job_id>/cancel", methods=["POST"])
@require_auth("assets")
@blp.response(200, JobSchema, description="The job was queued: it is cancelled")
@blp.alt_response(202, schema=JobSchema, success=True,
                  description="The job is running: it was asked to stop, and its worker stops it")
@blp.doc(responses={"400": {"description": "A body other than {} was sent (this route takes none)"},
                    "409": {"description": "The job has already finished"}})
@commits
def cancel_job(job_id):
    """Cancel one of your jobs. Takes no body (none, or `{}`).

    A queued job is cancelled at once (200). A running one is asked to stop (202, status
    still `running`, `cancel_requested` true); follow it to see it end. A finished job: 409.
    """
    _no_body()
    job, stopped = jobs.cancel_job(current_principal().user_id, job_id, gaia().clock.now())
    return job, 200 if stopped else 202


@blp.route("/jobs/<uuid:job_id>/events")
@require_auth("assets")
@blp.doc(responses={"200": {"description": "Server-sent events until the job ends", "content": {
    "text/event-stream": {"schema": _JOB_EVENT}}}})
def job_events(job_id):
    """Follow one of your jobs as server-sent events, until it ends."""
    user_id = current_principal().user_id
    first = _JOB.dump(jobs.get_job(user_id, job_id))
    release_connection()
    body = progress.job_events(current_app._get_current_object(), user_id, job_id, first=first)
    return Response(body, mimetype="text/event-stream", headers=progress.SSE_HEADERS)


# -- assets -----------------------------------------------------------------------------


@blp.route("/assets")
@require_auth("assets")
@blp.arguments(AssetListQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, AssetListSchema)
def list_assets(**query):
    """Your assets, newest first."""
    rows, next_cursor = assets.list_assets(current_principal().user_id, **query)
    return {"assets": rows, "next_cursor": next_cursor}


@blp.route("/assets/<uuid:asset_id>")
@require_auth("assets")
@blp.response(200, AssetSchema)
def get_asset(asset_id):
    """One of your assets: what was asked, its status, and its file's size, hash and cost."""
    return assets.get_asset(current_principal().user_id, asset_id)


@blp.route("/assets/<uuid:asset_id>", methods=["DELETE"])
@require_auth("assets")
@blp.response(204)
@commits
def delete_asset(asset_id):
    """Delete one of your assets, with its job; its file too, unless another asset has the
    same bytes."""
    assets.delete_asset(current_principal().user_id, asset_id, gaia().assets.storage,
                        current_app._get_current_object())


@blp.route("/assets/<uuid:asset_id>/file")
@require_auth("assets")
@blp.doc(parameters=_FILE_HEADERS, responses={
    "200": {"description": "The file", "content": _FILE_CONTENT},
    "206": {"description": "The byte range asked for (Content-Range)", "content": _FILE_CONTENT},
    "304": {"description": "Not modified (If-None-Match)"},
    "409": {"description": "The asset is not ready (pending, or failed)"},
    "416": {"description": "The range starts past the end of the file"},
})
def download_asset(asset_id):
    """The bytes of one of your ready assets, with its content type, an ETag (its SHA-256)
    and one byte range at a time (`Range`); HEAD answers the headers alone."""
    answer = assets.file_answer(
        current_principal().user_id, asset_id, gaia().assets.storage,
        range_header=request.headers.get("Range"), if_none_match=request.headers.get("If-None-Match"),
        if_range=request.headers.get("If-Range"), head=request.method == "HEAD",
    )
    response = Response(answer.body, status=answer.status, content_type=answer.content_type,
                        direct_passthrough=True)
    response.headers.update(answer.headers)
    if answer.content_type is None:
        del response.headers["Content-Type"]
    return response
