"""Split mode: the gateway forwards each service's paths to that service over HTTP.

Only services this process does not mount are forwarded (in the monolith nothing is). The
request goes on unchanged, credentials included: the service behind checks them itself with
the shared decorator, so nothing the gateway adds could be forged into trust. Responses stream
back as they arrive (server-sent events included).
"""

from __future__ import annotations

import logging
import os
import threading
from http.cookiejar import DefaultCookiePolicy

import requests
from flask import Blueprint, Flask, Response, request, stream_with_context

from gaia_app.constants import API_PREFIX
from gaia_app.errors import Unavailable, UpstreamFailure, UpstreamTimeout
from gaia_app.state import gaia

log = logging.getLogger("gaia.gateway")

# Which service answers which paths (prefixes below API_PREFIX unless absolute).
SERVICE_ROUTES = {
    "auth": ("/auth", "/keys", "/users"),
    "chat": ("/chat", "/providers", "/models", "/personas", "/conversations", "/v1"),
    "asset": ("/assets", "/jobs"),
}
_ABSOLUTE = {"/v1"}
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 300.0

class ServiceNotConfigured(Unavailable):
    type = "/problems/service-unavailable"


_sessions: dict[int, requests.Session] = {}
_sessions_lock = threading.Lock()


def _session() -> requests.Session:
    """One pooled session per process, shared by every request (thread or greenlet), so the
    connections to the services are reused. Nothing in it varies per request: it keeps no
    cookies (one client's must never ride along with another's request) and ignores the
    environment's proxy settings (the services are on the private network; requests would
    otherwise look them up on every call)."""
    session = _sessions.get(os.getpid())
    if session is None:
        with _sessions_lock:
            session = _sessions.get(os.getpid())
            if session is None:
                session = requests.Session()
                session.trust_env = False
                session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
                adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=256)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                _sessions.clear()  # a forked child does not use its parent's connections
                _sessions[os.getpid()] = session
    return session


def _forward(service: str):
    base = gaia().settings.service_urls.get(service)
    if not base:
        raise ServiceNotConfigured(
            f"The {service} service is not part of this process and "
            f"{service.upper()}_SERVICE_URL is not set."
        )
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    forwarded_for = request.headers.get("X-Forwarded-For")
    client = request.remote_addr or ""
    headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    url = base + request.full_path.rstrip("?") if request.query_string else base + request.path
    try:
        upstream = _session().request(
            request.method,
            url,
            headers=headers,
            data=request.get_data(cache=False) if request.content_length else None,
            stream=True,
            allow_redirects=False,
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
        )
    except requests.Timeout:
        log.warning("gateway: %s service timed out for %s %s", service, request.method, request.path)
        raise UpstreamTimeout(f"The {service} service did not answer in time.") from None
    except requests.RequestException as exc:
        log.warning("gateway: %s service unreachable: %s", service, exc)
        raise UpstreamFailure(
            f"The {service} service cannot be reached.", headers={"Retry-After": "5"}
        ) from None

    response_headers = [
        (k, v) for k, v in upstream.raw.headers.items() if k.lower() not in _HOP_BY_HOP
    ]

    def body():
        read_to_the_end = False
        try:
            yield from upstream.raw.stream(16 * 1024, decode_content=False)
            read_to_the_end = True
        finally:
            if read_to_the_end:
                upstream.raw.release_conn()  # back to the pool, for the next request
            else:
                upstream.close()

    return Response(
        stream_with_context(body()), status=upstream.status_code, headers=response_headers,
        direct_passthrough=True,
    )


def register_forwarding(app: Flask, settings) -> None:
    remote = [name for name in SERVICE_ROUTES if name not in settings.services]
    if not remote:
        return
    blp = Blueprint("gateway_forwarding", __name__)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    for service in remote:
        for prefix in SERVICE_ROUTES[service]:
            path = prefix if prefix in _ABSOLUTE else API_PREFIX + prefix
            endpoint = f"{service}{prefix.replace('/', '_')}"
            view = _make_view(service)
            blp.add_url_rule(path, endpoint, view, methods=methods)
            blp.add_url_rule(f"{path}/<path:rest>", f"{endpoint}_rest", view, methods=methods)
    app.register_blueprint(blp)


def _make_view(service: str):
    def forward(rest: str | None = None):
        return _forward(service)

    forward.__name__ = f"forward_to_{service}"
    return forward
