"""Request ids: one id follows a request through the gateway, the services and the workers.

`RequestIds` wraps the WSGI app of every web process. It takes the client's `X-Request-ID`
when it is well formed (1-128 characters of letters, digits and `-._:+=/@`), else makes one,
and writes it back into the request's environ, so the gateway's forwarding (which passes the
headers on) hands the same id to the service behind it. Every response carries it, and every
log line made while the request is handled names it (`current_request_id`, a context
variable: per thread, per greenlet). Celery tasks get it in a message header
(`gaia_app.celery_app`), and their log lines name it too.

It also writes the one access line per request (logger `gaia.request`): method, route,
status, latency, user, never a credential. The line is made when the response starts
(streams: when their headers go out), so an asset file still leaves by `sendfile`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar

from flask import g, has_app_context

HEADER = "X-Request-ID"
ENVIRON_KEY = "HTTP_X_REQUEST_ID"
CELERY_HEADER = "gaia_request_id"
_WELL_FORMED = re.compile(r"[A-Za-z0-9\-._:+=/@]{1,128}")

_current: ContextVar[str | None] = ContextVar("gaia_request_id", default=None)
access_log = logging.getLogger("gaia.request")


def current_request_id() -> str | None:
    return _current.get()


def bind_request_id(value: str | None) -> None:
    """Name the request (or task) this thread or greenlet now works for; None for none."""
    _current.set(value)


def well_formed(value: object) -> str | None:
    if isinstance(value, str) and _WELL_FORMED.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIds:
    """WSGI middleware: the request id in, on the response out, and the access line."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        request_id = well_formed(environ.get(ENVIRON_KEY)) or new_request_id()
        environ[ENVIRON_KEY] = request_id
        _current.set(request_id)
        started = time.perf_counter()

        def start(status, headers, exc_info=None):
            if not any(name.lower() == "x-request-id" for name, _ in headers):
                headers.append((HEADER, request_id))
            if access_log.isEnabledFor(logging.INFO):
                _log_request(environ, request_id, status, time.perf_counter() - started)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def _log_request(environ, request_id: str, status: str, seconds: float) -> None:
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    route = rule.rule if rule is not None else None
    path = environ.get("PATH_INFO", "")
    code = int(status[:3])
    latency_ms = round(seconds * 1000, 2)
    user_id = _user_id()
    access_log.info(
        "%s %s %s %.2fms",
        environ.get("REQUEST_METHOD", ""), route or path, code, latency_ms,
        extra={
            "request_id": request_id,
            "method": environ.get("REQUEST_METHOD", ""),
            "route": route,
            "path": path,
            "status": code,
            "latency_ms": latency_ms,
            "user_id": user_id,
        },
    )


def _user_id() -> str | None:
    """The authenticated user, when the request got that far (the app context is still
    active while the response starts)."""
    if not has_app_context():
        return None
    principal = g.get("principal")
    return str(principal.user_id) if principal is not None else None
