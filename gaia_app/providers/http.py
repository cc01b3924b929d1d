"""HTTP for remote providers: one connection pool each, explicit timeouts, errors made uniform.

Every failure leaves here as a `ProviderError` whose kind the chat service can act on
(fallback, Retry-After), whatever the provider's own error format.

The client is urllib3's pool itself, not requests on top of it: requests cost ~0.45 ms of
CPU per provider call (preparing and merging settings, cookies, redirects) for nothing a
provider call uses; bench/README.md ("Chat") has the figures. The pools, proxies and
certificates are `pools`' part. A provider that answers with a redirect is refused as a bad
answer (a POST is never replayed elsewhere; the error shows where it pointed, without
credentials or query): its `base_url` should name where it lives.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, DecodeError, NewConnectionError
from urllib3.exceptions import HTTPError as TransportError
from urllib3.response import BaseHTTPResponse

from gaia_app.constants import __version__
from gaia_app.providers.base import ProviderError
from gaia_app.providers.pools import StreamScope, UnusableProxy, pool_manager
from gaia_app.retry_after import parse_retry_after

log = logging.getLogger(__name__)

MODEL_LIST_READ_TIMEOUT = 5.0
# A provider answer larger than this (non-streamed) is not a chat completion.
MAX_BODY_BYTES = 8 * 1024 * 1024


def error_details(body: bytes) -> tuple[str | None, str | None, str | None]:
    """The human part of an error body (OpenAI's, Anthropic's and Ollama's shapes), and the
    `code` and `param` of OpenAI's error object when it has them."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:300] or None, None, None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message")
            code, param = error.get("code"), error.get("param")
            return (
                str(message)[:500] if message else None,
                str(code)[:100] if isinstance(code, (str, int)) and code != "" else None,
                str(param)[:200] if isinstance(param, str) and param else None,
            )
        if isinstance(error, str):
            return error[:500], None, None
    return None, None, None


def _kind_for_status(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "unauthorized"
    if status == 404:
        return "not_found"
    if status == 408 or status >= 500:
        return "unavailable"
    return "rejected"


class ProviderHTTP:
    def __init__(
        self,
        provider_id: str,
        base_url: str,
        headers: dict[str, str],
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.provider_id = provider_id
        self.base_url = base_url.rstrip("/")
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        common = {"User-Agent": f"gaia/{__version__}", "Accept": "*/*", "Accept-Encoding": "gzip, deflate", **headers}
        self._json_headers = {**common, "Content-Type": "application/json"}
        self.pool: urllib3.PoolManager | None = None
        self._unusable: str | None = None
        try:
            self.pool = pool_manager(self.base_url, common)
        except UnusableProxy as problem:
            log.error("provider %s: %s; its calls will fail", provider_id, problem)
            self._unusable = str(problem)

    def _fail(self, kind: str, message: str, **extra) -> ProviderError:
        return ProviderError(self.provider_id, kind, message, **extra)

    def request(
        self, method: str, path: str, body: dict | None = None, *, stream: bool = False,
        read_timeout: float | None = None,
    ) -> BaseHTTPResponse:
        """Send one request; an answer that is not 2xx becomes a ProviderError. The body is
        left unread (read it with `read_capped`, `read_json` or `events`)."""
        timeout = self.timeout if read_timeout is None else urllib3.Timeout(
            connect=self.connect_timeout, read=read_timeout)
        scope = StreamScope.current() if stream else None
        if scope is not None:
            scope.watch(True)
        try:
            response = self._send(method, path, body, timeout)
        except BaseException:
            if scope is not None:
                scope.watch(False)
            raise
        if response.status < 300:
            if scope is not None and scope.on_open is not None:
                scope.on_open()
            return response
        try:
            detail, code, param = error_details(response.read(64 * 1024, decode_content=True))
        except Exception:
            detail = code = param = None
        finally:
            if scope is not None:
                scope.watch(False)
            response.close()
        status = response.status
        if status < 400:
            where = _shown_location(response.headers.get("Location"))
            raise self._fail("bad_response", f"{self.provider_id} answered {status} (a redirect"
                             + (f" to {where}" if where else "") + "); its base_url should name where it lives",
                             upstream_status=status)
        raise self._fail(
            _kind_for_status(status),
            f"{self.provider_id} answered {status}" + (f": {detail}" if detail else ""),
            upstream_status=status,
            retry_after=parse_retry_after(response.headers),
            code=code,
            param=param,
        )

    def _send(self, method, path, body, timeout) -> BaseHTTPResponse:
        if self.pool is None:
            raise self._fail("unavailable", f"{self.provider_id} cannot be called: {self._unusable}")
        try:
            return self.pool.request(
                method,
                self.base_url + path,
                body=None if body is None else json.dumps(body, separators=(",", ":")).encode(),
                headers=None if body is None else self._json_headers,
                preload_content=False,
                redirect=False,
                timeout=timeout,
            )
        except NewConnectionError as exc:  # before its base class, ConnectTimeoutError
            raise self._fail("unavailable", f"{self.provider_id} could not be reached: {_short(exc)}") from None
        except ConnectTimeoutError:
            raise self._fail("timeout", f"{self.provider_id} did not accept a connection in time") from None
        except TransportError as exc:
            if _timed_out(exc):
                raise self._fail("timeout", f"{self.provider_id} did not answer in time") from None
            raise self._fail("unavailable", f"{self.provider_id} could not be reached: {_short(exc)}") from None
        except (OSError, ValueError) as exc:  # ValueError: http.client refusing a header value
            raise self._fail("unavailable", f"{self.provider_id} could not be reached: {_short(exc)}") from None

    def post_json(self, path: str, body: dict) -> dict:
        response = self.request("POST", path, body)
        return self.read_json(response)

    def get_json(self, path: str) -> dict:
        response = self.request("GET", path, read_timeout=min(MODEL_LIST_READ_TIMEOUT, self.read_timeout))
        return self.read_json(response)

    def read_capped(self, response: BaseHTTPResponse, limit: int, too_big: str) -> bytes:
        """The whole (decoded) body, at most `limit` bytes: past that, a bad answer saying
        `too_big`. A body read to its end gives its connection back to the pool."""
        parts, size = [], 0
        try:
            for block in response.stream(1024 * 1024, decode_content=True):
                size += len(block)
                if size > limit:
                    raise self._fail("bad_response", too_big)
                parts.append(block)
        except DecodeError:
            raise self._fail("bad_response", f"{self.provider_id} sent a body its Content-Encoding does not "
                             "decode") from None
        except (TransportError, OSError) as exc:
            kind = "timeout" if _timed_out(exc) else "unavailable"
            raise self._fail(kind, f"{self.provider_id} broke off its answer: {_short(exc)}") from None
        finally:
            response.close()
        return b"".join(parts)

    def read_json(self, response: BaseHTTPResponse) -> dict:
        content = self.read_capped(response, MAX_BODY_BYTES, f"{self.provider_id} sent an oversized answer")
        try:
            data = json.loads(content)
        except ValueError:
            raise self._fail("bad_response", f"{self.provider_id} sent an answer that is not JSON") from None
        if not isinstance(data, dict):
            raise self._fail("bad_response", f"{self.provider_id} sent an unexpected answer")
        return data

    def events(self, response: BaseHTTPResponse) -> Iterator[tuple[str | None, str]]:
        """Server-sent events of an open response as (event name, data), as they arrive.

        Reads whatever bytes the socket has (`read1`), so nothing waits for a buffer to fill.
        A connection that breaks or stalls past the read timeout raises ProviderError
        ("interrupted" or "timeout"). A body read to its end gives its connection back to the
        pool; closing the generator before that closes the connection.
        """
        raw = response
        buffer = b""
        event: str | None = None
        data: list[str] = []
        read_to_the_end = False
        try:
            while True:
                try:
                    block = raw.read1(65536)
                except DecodeError:
                    raise self._fail("bad_response", f"{self.provider_id} sent a stream its Content-Encoding "
                                     "does not decode") from None
                except Exception as exc:
                    if _timed_out(exc):
                        raise self._fail("timeout", f"{self.provider_id} went silent mid-answer") from None
                    log.info("%s stream broke: %s", self.provider_id, _short(exc))
                    raise self._fail("interrupted", f"{self.provider_id} broke off its answer (connection lost)") from None
                if not block:
                    read_to_the_end = True
                    return
                buffer += block
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    line = line.rstrip(b"\r")
                    if not line:
                        if data:
                            yield event, "\n".join(data)
                        event, data = None, []
                    elif line.startswith(b":"):
                        continue
                    else:
                        name, _, value = line.decode("utf-8", "replace").partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "data":
                            data.append(value)
                        elif name == "event":
                            event = value
                if len(buffer) > MAX_BODY_BYTES:
                    raise self._fail("bad_response", f"{self.provider_id} sent an endless line")
        finally:
            scope = StreamScope.current()
            if scope is not None:
                scope.watch(False)
            if read_to_the_end:
                # Back to the pool for the next stream (closing would drop the connection).
                raw.release_conn()
            else:
                response.close()


def _timed_out(exc: BaseException) -> bool:
    """Whether a failed call or read was a timeout: urllib3 raises ReadTimeoutError, or a
    ProtocolError (or ProxyError) around the socket's timeout. A refused connection is not
    one, though urllib3 2 makes NewConnectionError a ConnectTimeoutError."""
    timeouts = (urllib3.exceptions.TimeoutError, socket.timeout)
    return any(isinstance(each, timeouts) and not isinstance(each, NewConnectionError)
               for each in (exc, *getattr(exc, "args", ())))


def _shown_location(location: str | None) -> str | None:
    """Where a redirect pointed, as an error may show it: scheme, host, port and path only
    (no credentials, no query), printable, at most 200 characters."""
    if not location:
        return None
    try:
        parts = urlsplit(location)
        shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}" \
            if parts.scheme and parts.hostname else parts.path
    except ValueError:
        return None
    shown = "".join(ch for ch in shown if ch.isprintable())
    return shown[:200] or None


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
