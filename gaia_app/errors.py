"""Every error leaves the app as RFC 9457 problem+json, from this one place."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, json, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from gaia_app.extensions import db

log = logging.getLogger("gaia.errors")

PROBLEM_MIMETYPE = "application/problem+json"


class APIError(Exception):
    """An error the client should see, with its HTTP status and a clear detail."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type: str = "about:blank",
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.type = type
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = extra


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
    from http import HTTPStatus

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
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


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
            entry = {"field": path or None, "message": message}
            if location:
                entry["location"] = location
            found.append(entry)
    elif isinstance(messages, (list, tuple)):
        for index, value in enumerate(messages):
            found.extend(flatten_messages(value, location, f"{path}.{index}" if path else str(index)))
    else:
        entry = {"field": path or None, "message": str(messages)}
        if location:
            entry["location"] = location
        found.append(entry)
    return found


def _summary(errors: list[dict]) -> str:
    parts = [f"{e['field']}: {e['message']}" if e.get("field") else e["message"] for e in errors]
    return "; ".join(parts[:5]) + ("; ..." if len(parts) > 5 else "")


def _handle_api_error(error: APIError) -> Response:
    return problem(
        error.status,
        error.detail,
        title=error.title,
        type=error.type,
        errors=error.errors,
        headers=error.headers,
        **error.extra,
    )


def _handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    headers = {}
    data = getattr(error, "data", None) or {}
    if data.get("headers"):
        headers.update(data["headers"])
    if status == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))

    messages = data.get("messages")
    if messages is not None:
        errors = flatten_messages(messages)
        if status == 400 and any(e.get("location") == "json" and not e.get("field") for e in errors):
            return problem(
                400,
                "The request body is not valid JSON.",
                title="Malformed JSON",
                type="/problems/malformed-json",
                headers=headers,
            )
        return problem(
            status,
            _summary(errors),
            title="Validation failed",
            type="/problems/validation",
            errors=errors,
            headers=headers,
        )

    detail = {
        404: f"Nothing is served at {request.path}.",
        405: f"{request.method} is not allowed on {request.path}.",
        413: f"The request body is larger than the {request.max_content_length} bytes accepted.",
    }.get(status, error.description or "")
    return problem(status, detail, headers=headers)


def _is_missing_schema(error: DBAPIError) -> bool:
    text = str(error.orig).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def _handle_database_error(error: DBAPIError) -> Response:
    _rollback()
    if _is_missing_schema(error):
        # The seed's "relation api_keys does not exist": wrong database, or never migrated.
        log.error("database schema missing during %s %s: %s", request.method, request.path, error.orig)
        return problem(
            503,
            "The database schema is missing or behind; run `flask --app wsgi db upgrade` "
            "against this DATABASE_URL.",
            type="/problems/database-schema",
        )
    if isinstance(error, OperationalError):
        log.error("database unavailable during %s %s: %s", request.method, request.path, error.orig)
        return problem(
            503,
            "The database is unavailable; try again shortly.",
            type="/problems/database-unavailable",
            headers={"Retry-After": "5"},
        )
    return _handle_unexpected(error)


def _handle_unexpected(error: Exception) -> Response:
    _rollback()
    log.exception("unhandled error during %s %s", request.method, request.path)
    return problem(500, "An unexpected error occurred; it has been logged.")


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
