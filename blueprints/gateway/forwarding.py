"""Split mode: the gateway forwards each service's paths to that service over HTTP.

Only services this process does not mount are forwarded (in the monolith nothing is); the
settings refuse to start without a valid URL for each of them (`config.service_url`). The
request goes on unchanged, credentials included: the service behind checks them itself with
the shared decorator, so nothing the gateway adds could be forged into trust.

- Headers: all but the hop-by-hop ones (RFC 9110 7.6.1: `Connection` and every header it
  names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`), and
  `Host`, `Expect`, `Content-Length`, which belong to the new request; `X-Forwarded-For`,
  `-Proto` and `-Host` say where it came from.
- Body: read whole before the service is called, at most MAX_CONTENT_LENGTH bytes whether it
  came with a Content-Length or chunked (past it, 413, and the service never hears of it),
  then sent with its own Content-Length. A chunked body the WSGI server does not end for us
  (no `wsgi.input_terminated`) is refused with 411, never forwarded empty.
- Answers: successful ones and redirects stream back as they arrive, untouched whatever
  their type (asset files, server-sent events), and so do error answers in JSON
  (problem+json, OpenAI's shape). An error answer (status >= 400) in anything but JSON is not
  Gaia's own (a proxy's HTML page, a crashed server's text): the client gets a 502 naming the
  service instead (`UpstreamBadResponse`).
- Faults: a refused or broken connection is a 502 with `Retry-After`; no connection within
  GATEWAY_CONNECT_TIMEOUT, or silence longer than GATEWAY_READ_TIMEOUT before the answer
  starts, a 504. A pooled connection that a restarted service closed is noticed by urllib3
  before it is used again; one that breaks while a request is on its way is retried once on
  a new connection for GET, HEAD and OPTIONS only (a repeated POST, PUT or DELETE could act
  twice, or answer 404 for what the first attempt did). An answer that breaks off before
  its first byte is a 502 (504 after the read timeout); one that breaks off later ends the
  client's response abruptly, so that it cannot pass for a complete one.
- A client that leaves midway: the server closes our body iterator, which closes the
  connection to the service, so it stops at its next write.
- The client is urllib3's pool itself, not requests on top of it: requests added a third of
  the gateway's CPU per forwarded request (bench/README.md, "Gateway") for what the gateway
  does not use (cookies, proxies from the environment, redirects, body encoding).
"""

from __future__ import annotations

import logging
import os
import threading
from urllib.parse import quote

import urllib3
from flask import Blueprint, Flask, Response, request, stream_with_context
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import TimeoutError as TransportTimeout
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from gaia_app.config import SERVICE_PATHS
from gaia_app.errors import LengthRequired, UpstreamBadResponse, UpstreamFailure, UpstreamTimeout
from gaia_app.state import gaia

log = logging.getLogger("gaia.gateway")

_HOP_BY_HOP = frozenset({
    "connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# Set anew on the forwarded request (urllib3 writes Host and Content-Length itself).
_NOT_FORWARDED = _HOP_BY_HOP | {"host", "content-length", "expect"}
# The gateway's own server writes these for its response.
_NOT_RELAYED = _HOP_BY_HOP | {"date", "server"}
# Characters a path keeps as they are when it goes out again (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_READ_SIZE = 64 * 1024
_RELAY_CHUNK = 16 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _RetryBrokenConnection(Retry):
    """Never after a read timeout: that would double the wait and repeat the work."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        if isinstance(error, ReadTimeoutError):
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def retry_policy() -> Retry:
    """One more attempt, on a new connection, for a safe method whose connection broke after
    the request went out; nothing else."""
    return _RetryBrokenConnection(
        total=None, connect=0, read=1, redirect=0, status=0, other=0,
        allowed_methods=SAFE_METHODS, respect_retry_after_header=False,
        raise_on_redirect=False, raise_on_status=False,
    )


_pools: dict[int, urllib3.PoolManager] = {}
_pools_lock = threading.Lock()


def _pool() -> urllib3.PoolManager:
    """One pool per process, shared by every request (thread or greenlet), so the connections
    to the services are reused. It keeps no cookies and reads no proxy settings (the services
    are on the private network)."""
    pool = _pools.get(os.getpid())
    if pool is None:
        with _pools_lock:
            pool = _pools.get(os.getpid())
            if pool is None:
                pool = urllib3.PoolManager(num_pools=4, maxsize=256, retries=retry_policy())
                _pools.clear()  # a forked child does not use its parent's connections
                _pools[os.getpid()] = pool
    return pool


def _named_by_connection(value: str | None) -> set[str]:
    """The headers a `Connection` header declares hop-by-hop."""
    return {token.strip().lower() for token in (value or "").split(",") if token.strip()}


def _request_headers() -> dict[str, str]:
    dropped = _NOT_FORWARDED | _named_by_connection(request.headers.get("Connection"))
    headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
    forwarded_for = request.headers.get("X-Forwarded-For")
    client = request.remote_addr or ""
    headers["X-Forwarded-For"] = f"{forwarded_for}, {client}" if forwarded_for else client
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


def _request_body() -> bytes | None:
    """The body to forward, or None when the request has none."""
    if request.content_length is not None:
        # Already held to MAX_CONTENT_LENGTH before any view ran (errors.py).
        return request.get_data(cache=False)
    if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return None
    if "wsgi.input_terminated" not in request.environ:
        raise LengthRequired(
            "This server cannot tell where a chunked request body ends; "
            "send the body with a Content-Length."
        )
    return _read_chunked(request.environ["wsgi.input"], request.max_content_length)


def _read_chunked(stream, limit: int | None) -> bytes:
    """The whole de-chunked body, refused (413) once it is past `limit` bytes."""
    pieces, size = [], 0
    while True:
        try:
            piece = stream.read(_READ_SIZE)
        except (OSError, ValueError):
            raise ClientDisconnected() from None
        if not piece:
            return b"".join(pieces)
        size += len(piece)
        if limit is not None and size > limit:
            raise RequestEntityTooLarge()
        pieces.append(piece)


def _target(base: str) -> str:
    # `request.path` is decoded: quoted again, a `?` or `#` inside a segment stays in it.
    url = base + quote(request.path, safe=_PATH_SAFE)
    return f"{url}?{request.query_string.decode('latin-1')}" if request.query_string else url


def _send(service: str) -> BaseHTTPResponse:
    settings = gaia().settings
    connect, read = settings.gateway_connect_timeout, settings.gateway_read_timeout
    body = _request_body()
    try:
        return _pool().urlopen(
            request.method, _target(settings.service_urls[service]), body=body,
            headers=_request_headers(), preload_content=False, decode_content=False,
            redirect=False, retries=retry_policy(), timeout=urllib3.Timeout(connect=connect, read=read),
        )
    except MaxRetryError as exc:
        failure = exc.reason
    except TransportError as exc:
        failure = exc
    # (urllib3 makes a refused connection a kind of connect timeout: it is not one.)
    if isinstance(failure, ConnectTimeoutError) and not isinstance(failure, NewConnectionError):
        log.warning("gateway: %s service took no connection within %g s", service, connect)
        raise UpstreamTimeout(f"The {service} service did not accept a connection within {connect:g} s.")
    if isinstance(failure, TransportTimeout) and not isinstance(failure, NewConnectionError):
        log.warning("gateway: %s service silent for %g s on %s %s", service, read,
                    request.method, request.path)
        raise UpstreamTimeout(f"The {service} service did not answer within {read:g} s.")
    log.warning("gateway: %s service unreachable: %s", service, failure)
    raise UpstreamFailure(f"The {service} service cannot be reached.", headers={"Retry-After": "5"})


def is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _refuse_foreign_error(service: str, upstream: BaseHTTPResponse) -> None:
    """An error answer that is not JSON did not come from Gaia's handlers: say which service
    failed, and never pass its page on."""
    status = upstream.status
    if status < 400 or is_json(upstream.headers.get("Content-Type")):
        return
    media_type = (upstream.headers.get("Content-Type") or "").split(";", 1)[0].strip()[:100]
    retry_after = upstream.headers.get("Retry-After") or ("5" if status in (502, 503, 504) else None)
    upstream.close()
    log.warning("gateway: %s service answered %s %s with %s", service, request.method,
                request.path, f"{status} {media_type or '(no content type)'}")
    raise UpstreamBadResponse(
        f"The {service} service failed: it answered {status} with "
        f"{media_type or 'no content type'} instead of an API response.",
        headers={"Retry-After": retry_after} if retry_after else None,
        service=service, upstream_status=status,
    )


def _first_piece(service: str, upstream: BaseHTTPResponse, pieces) -> bytes:
    """The answer's first bytes, read before the response starts: a service that fails
    before sending any still gets a proper error answer, not a server's own 500 page. (The
    server sends no headers before the first bytes anyway.)"""
    try:
        return next(pieces, b"")
    except ReadTimeoutError:
        upstream.close()
        read = gaia().settings.gateway_read_timeout
        raise UpstreamTimeout(f"The {service} service did not answer within {read:g} s.") from None
    except TransportError as exc:
        upstream.close()
        log.warning("gateway: %s service's answer broke off before it began: %s", service, exc)
        raise UpstreamFailure(
            f"The {service} service's answer broke off.", headers={"Retry-After": "5"}
        ) from None


def _body(service: str, upstream: BaseHTTPResponse, first: bytes, pieces):
    finished = False
    try:
        if first:
            yield first
        yield from pieces
        finished = True
    except TransportError as exc:
        log.warning("gateway: %s service's answer broke off: %s", service, exc)
        raise  # the client's response must end abruptly too, not look complete
    finally:
        if finished:
            upstream.release_conn()  # back to the pool, for the next request
        else:
            upstream.close()  # the service sees its connection close (a client that left)


def _relay(service: str, upstream: BaseHTTPResponse) -> Response:
    dropped = _NOT_RELAYED | _named_by_connection(upstream.headers.get("Connection"))
    headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in dropped]
    if request.method == "HEAD" or upstream.status in (204, 304):
        upstream.close()  # no body comes, and the server would never iterate one
        body = ()
    else:
        pieces = upstream.stream(_RELAY_CHUNK, decode_content=False)
        first = _first_piece(service, upstream, pieces)
        body = stream_with_context(_body(service, upstream, first, pieces))
    response = Response(body, status=upstream.status, headers=headers, direct_passthrough=True)
    if "Content-Type" not in upstream.headers:
        del response.headers["Content-Type"]  # not werkzeug's default in its place
    return response


def _forward(service: str) -> Response:
    upstream = _send(service)
    _refuse_foreign_error(service, upstream)
    return _relay(service, upstream)


def register_forwarding(app: Flask, settings) -> None:
    remote = [name for name in SERVICE_PATHS if name not in settings.services]
    if not remote:
        return
    blp = Blueprint("gateway_forwarding", __name__)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    for service in remote:
        view = _make_view(service)
        for path in SERVICE_PATHS[service]:
            endpoint = f"{service}_{path.rsplit('/', 1)[-1]}"
            blp.add_url_rule(path, endpoint, view, methods=methods)
            blp.add_url_rule(f"{path}/<path:rest>", f"{endpoint}_rest", view, methods=methods)
    app.register_blueprint(blp)


def _make_view(service: str):
    def forward(rest: str | None = None):
        return _forward(service)

    forward.__name__ = f"forward_to_{service}"
    return forward
