"""Every error leaves the app from this one place: problem+json (RFC 9457), or OpenAI's error
shape under `/v1`.

Services raise domain errors (`NotFound`, `Conflict`, `InvalidField`, ...). Each kind carries
its own status and problem type, and the field it concerns where there is one; the handlers
below only render them. No status is ever chosen by reading an exception's message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, json, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gaia_app.extensions import db, is_missing_schema

log = logging.getLogger("gaia.errors")

PROBLEM_MIMETYPE = "application/problem+json"
OPENAI_PREFIX = "/v1"


class APIError(Exception):
    """An error the client should see. Subclasses name the kind; `status` comes with it."""

    status = 500
    type = "about:blank"
    title: str | None = None
    # The `code` of OpenAI's error object, for the kinds that have one.
    openai_code: str | None = None

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = extra

    @property
    def field(self) -> str | None:
        """The (first) field the error is about, if any."""
        return self.errors[0].get("field") if self.errors else None


class InvalidRequest(APIError):
    """The request as a whole cannot be understood (400)."""

    status = 400
    type = "/problems/invalid-request"


class InvalidField(APIError):
    """One field's value is not acceptable (422; 400 under /v1, as OpenAI answers)."""

    status = 422
    type = "/problems/validation"
    title = "Validation failed"

    def __init__(self, field: str | None, message: str, *, location: str = "json", **extra: Any):
        super().__init__(
            message,
            errors=[{"field": field, "location": location, "message": message}],
            **extra,
        )


class Unauthenticated(APIError):
    """Missing, malformed, unknown, revoked or expired credentials (401)."""

    status = 401
    type = "/problems/invalid-credentials"
    openai_code = "invalid_api_key"

    def __init__(self, detail: str, **extra: Any):
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="gaia"'}, **extra)


class Forbidden(APIError):
    """Valid credentials without the right to do this (403)."""

    status = 403
    type = "/problems/forbidden"


class InsufficientScope(Forbidden):
    type = "/problems/insufficient-scope"
    openai_code = "insufficient_scope"


class NotFound(APIError):
    """No such object, or someone else's: the two look the same (404)."""

    status = 404
    type = "/problems/not-found"


class UnknownModel(NotFound):
    type = "/problems/unknown-model"
    openai_code = "model_not_found"


class UnknownProvider(NotFound):
    type = "/problems/unknown-provider"
    openai_code = "model_not_found"


class Conflict(APIError):
    """The request clashes with the current state: a duplicate, or a forbidden transition (409)."""

    status = 409
    type = "/problems/conflict"


class RateLimited(APIError):
    """Too many requests; `Retry-After` says when to come back (429)."""

    status = 429
    type = "/problems/rate-limited"
    openai_code = "rate_limit_exceeded"


class Unavailable(APIError):
    """Something this request needs is not there right now (503)."""

    status = 503
    type = "/problems/unavailable"


class NoModel(Unavailable):
    type = "/problems/no-model"


class SchemaMissing(Unavailable):
    type = "/problems/database-schema"


class UpstreamFailure(APIError):
    """A service or provider behind this one failed; the subclass says how."""

    status = 502
    type = "/problems/upstream-unavailable"


class UpstreamTimeout(UpstreamFailure):
    status = 504
    type = "/problems/upstream-timeout"


class UpstreamBadResponse(UpstreamFailure):
    """A service behind answered an error that is no API answer (a proxy's HTML page, a
    crashed server's plain text): the client gets this in its place (502)."""

    type = "/problems/upstream-bad-response"


class LengthRequired(APIError):
    """A body of unknown length that this server cannot read safely (411)."""

    status = 411
    type = "/problems/length-required"


# -- rendering ----------------------------------------------------------------------------


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type: str = "about:blank",
    errors: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    response = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype=PROBLEM_MIMETYPE)
    response.headers.update(headers or {})
    return response


# OpenAI's error `type` for each status.
_OPENAI_TYPES = {401: "invalid_request_error", 403: "permission_error", 429: "rate_limit_exceeded"}


def openai_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """`{"error": {"message", "type", "param", "code"}}`, the shape OpenAI's SDKs parse."""
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    response = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")
    response.headers.update(headers or {})
    return response


def _speaks_openai() -> bool:
    return request.path == OPENAI_PREFIX or request.path.startswith(OPENAI_PREFIX + "/")


def render(error: APIError) -> Response:
    if _speaks_openai():
        # OpenAI answers a bad field with 400, not 422.
        status = 400 if isinstance(error, InvalidField) else error.status
        return openai_error(status, error.detail, param=error.field, code=error.openai_code,
                            headers=error.headers)
    return problem(
        error.status, error.detail, title=error.title, type=error.type, errors=error.errors,
        headers=error.headers, **error.extra,
    )


def flatten_messages(messages: Any, location: str | None = None, path: str = "") -> list[dict]:
    """Turn marshmallow/webargs nested messages into a flat list of field problems."""
    found: list[dict] = []
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            key = str(key)
            if location is None and not path and key in ("json", "query", "form", "headers", "files"):
                found.extend(flatten_messages(value, key, ""))
            else:
                found.extend(flatten_messages(value, location, f"{path}.{key}" if path else key))
    elif isinstance(messages, (list, tuple)) and all(isinstance(m, str) for m in messages):
        for message in messages:
            found.append(_field_problem(path, location, message))
    elif isinstance(messages, (list, tuple)):
        for index, value in enumerate(messages):
            found.extend(flatten_messages(value, location, f"{path}.{index}" if path else str(index)))
    else:
        found.append(_field_problem(path, location, str(messages)))
    return found


def _field_problem(path: str, location: str | None, message: str) -> dict:
    entry = {"field": path or None, "message": message}
    if location:
        entry["location"] = location
    return entry


def _summary(errors: list[dict]) -> str:
    parts = [f"{e['field']}: {e['message']}" if e.get("field") else e["message"] for e in errors]
    return "; ".join(parts[:5]) + ("; ..." if len(parts) > 5 else "")


class _Validation(InvalidField):
    """The schemas' field problems, several at once."""

    def __init__(self, detail: str, *, errors: list[dict], headers: Mapping[str, str]):
        APIError.__init__(self, detail, errors=errors, headers=headers)


class _MalformedJSON(InvalidRequest):
    type = "/problems/malformed-json"
    title = "Malformed JSON"


class _HTTPError(APIError):
    """A plain HTTP error (routing 404/405, 413, ...): its status is the exception's."""

    def __init__(self, status: int, detail: str, *, headers: Mapping[str, str]):
        super().__init__(detail, headers=headers)
        self.status = status


class _DatabaseUnavailable(Unavailable):
    type = "/problems/database-unavailable"


def _http_exception_as_error(error: HTTPException) -> APIError:
    """Werkzeug's and webargs' exceptions as one of ours, so both shapes render alike."""
    data = getattr(error, "data", None) or {}
    headers = dict(data.get("headers") or {})
    if error.code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    messages = data.get("messages")
    if messages is not None:
        errors = flatten_messages(messages)
        if error.code == 400 and any(e.get("location") == "json" and not e.get("field") for e in errors):
            return _MalformedJSON("The request body is not valid JSON.", headers=headers)
        return _Validation(_summary(errors), errors=errors, headers=headers)
    detail = {
        404: f"Nothing is served at {request.path}.",
        405: f"{request.method} is not allowed on {request.path}.",
        413: f"The request body is larger than the {request.max_content_length} bytes accepted.",
    }.get(error.code, error.description or "")
    return _HTTPError(error.code or 500, detail, headers=headers)


def _handle_api_error(error: APIError) -> Response:
    # Whatever the request changed is not kept (locks are released at once, too).
    _rollback()
    return render(error)


def _handle_http_exception(error: HTTPException) -> Response:
    return render(_http_exception_as_error(error))


def _handle_database_error(error: DBAPIError) -> Response:
    _rollback()
    if is_missing_schema(error):
        # The seed's "relation api_keys does not exist": wrong database, or never migrated.
        log.error("database schema missing during %s %s: %s", request.method, request.path, error.orig)
        return render(SchemaMissing(
            "The database schema is missing or behind; run `flask --app wsgi db upgrade` "
            "against this DATABASE_URL."
        ))
    if isinstance(error, OperationalError):
        log.error("database unavailable during %s %s: %s", request.method, request.path, error.orig)
        return render(_DatabaseUnavailable(
            "The database is unavailable; try again shortly.", headers={"Retry-After": "5"}
        ))
    return _handle_unexpected(error)


def _handle_unexpected(error: Exception) -> Response:
    _rollback()
    log.exception("unhandled error during %s %s", request.method, request.path)
    return render(APIError("An unexpected error occurred; it has been logged."))


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # the session may be unusable when the database itself is gone
        log.debug("rollback after error failed", exc_info=True)


def _reject_oversized_body() -> None:
    """Refuse a too-large body from its Content-Length, before anything reads it.

    Werkzeug only raises 413 when a view reads the body; checking here makes the limit hold
    for every route and costs the server no read of the excess.
    """
    limit = request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge()


def register_error_handlers(app: Flask) -> None:
    app.before_request(_reject_oversized_body)
    app.register_error_handler(APIError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(DBAPIError, _handle_database_error)
    app.register_error_handler(Exception, _handle_unexpected)
