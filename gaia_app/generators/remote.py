"""What the generators behind a provider's HTTP API share: requests, downloads, polling,
prompts and option checks.

One pooled `requests.Session` per generator with the (connect, read) timeouts of its
`GeneratorSettings`. Every failure leaves here as a `GeneratorError` whose kind says whether
trying again can help: no connection or a 5xx is "unavailable", a timeout "timeout", 429
"rate_limited" (with the provider's Retry-After), 401/402/403 "unauthorized", other 4xx
"rejected", a policy refusal "refused" (each provider's error reader says which bodies are
refusals) and an answer that is not what the API promises "bad_response". Every body is read
with a size cap, so a runaway answer cannot fill a worker's memory.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from gaia_app.generators.base import (
    GenerationRequest,
    GeneratorError,
    GeneratorSettings,
    OptionError,
)
from gaia_app.retry_after import parse_retry_after

# Generators run inside worker tasks, a few at a time per process.
POOL_SIZE = 16
# A JSON answer that carries no file (a task, an id); files get the settings' own limit.
MAX_JSON_BYTES = 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
MAX_REDIRECTS = 5
READ_CHUNK = 64 * 1024
DOWNLOAD_SCHEMES = ("http", "https")

T = TypeVar("T")


@dataclass(frozen=True)
class ErrorDetail:
    """What a provider's error body says: its message, and whether it is a policy refusal."""

    message: str | None = None
    refused: bool = False


# (HTTP status, the error body parsed as JSON or None) -> what it says.
ErrorReader = Callable[[int, Any], ErrorDetail]


@dataclass(frozen=True)
class Answer:
    """A successful answer, its body read in full (within its cap)."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


class RemoteGenerator:
    """What every generator behind an HTTP API shares: its client (`self.api`) and the check
    that a category is one it makes. A subclass names its `id`, `name`, `categories`,
    `default_base_url` and `read_error`, and overrides `auth_headers` if its API does not take
    a bearer token."""

    id: str
    name: str
    categories: tuple[str, ...]
    default_base_url: str

    def __init__(self, settings: GeneratorSettings, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.api = RemoteAPI(self.id, settings, self.default_base_url, self.auth_headers(settings.api_key or ""),
                             type(self).read_error, sleep=sleep, clock=clock)

    @staticmethod
    def read_error(status: int, body: Any) -> ErrorDetail:
        """What an error answer says (each API words it its own way)."""
        raise NotImplementedError

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def check_category(self, category: str) -> None:
        if category not in self.categories:
            raise OptionError("category", f"{self.name} does not make {category}")


class RemoteAPI:
    """One provider's HTTP API as a generator uses it."""

    def __init__(self, generator_id: str, settings: GeneratorSettings, default_base_url: str,
                 auth_headers: Mapping[str, str], read_error: ErrorReader, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.generator_id = generator_id
        self.settings = settings
        self.base_url = (settings.base_url or default_base_url).rstrip("/")
        # Sent to the API only: file downloads go to other hosts, with signed URLs.
        self.auth_headers = dict(auth_headers)
        self.read_error = read_error
        self.sleep = sleep
        self.clock = clock
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        session = requests.Session()
        # Proxies are read once: with trust_env, requests would read the environment per call.
        session.trust_env = False
        session.proxies = get_environ_proxies(self.base_url)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.session = session

    def fail(self, kind: str, message: str, **extra: Any) -> GeneratorError:
        return GeneratorError(self.generator_id, kind, message, **extra)

    def require_key(self) -> None:
        """Fail before any call when no key is configured: the provider would only say 401."""
        if not self.settings.api_key:
            raise self.fail("unauthorized", f"no API key is configured for {self.generator_id}")

    # -------------------------------------------------------------------------- requests

    def call(self, method: str, path: str, *, json_body: Any = None,
             form: Mapping[str, Any] | None = None, params: Mapping[str, str] | None = None,
             headers: Mapping[str, str] | None = None,
             max_bytes: int = MAX_JSON_BYTES) -> Answer:
        """One API request; a non-2xx answer becomes the GeneratorError its status and body
        say. `form` is sent as multipart/form-data, `json_body` as JSON."""
        files = None if form is None else {name: (None, str(value)) for name, value in form.items()}
        response = self._send(method, self.base_url + path, json=json_body, files=files,
                              params=params, headers={**self.auth_headers, **(headers or {})})
        with response:
            status = response.status_code
            if status >= 400:
                raise self._status_error(status, response.headers,
                                         self._read(response, MAX_ERROR_BYTES, cut=True))
            if status >= 300:
                raise self.fail("bad_response", f"{self.generator_id} answered {status} "
                                                "(a redirect) to an API call")
            return Answer(status, response.headers, self._read(response, max_bytes))

    def json_of(self, answer: Answer) -> dict[str, Any]:
        try:
            data = json.loads(answer.content)
        except ValueError:
            raise self.fail("bad_response", f"{self.generator_id} answered with something "
                                            "that is not JSON") from None
        if not isinstance(data, dict):
            raise self.fail("bad_response", f"{self.generator_id} answered with JSON that is "
                                            "not an object")
        return data

    def download(self, url: str, max_bytes: int) -> bytes:
        """The file at a provider's URL, fetched at once (such URLs expire), without Gaia's
        credentials, following redirects to http(s) only, refused past `max_bytes`."""
        for _ in range(MAX_REDIRECTS + 1):
            scheme = urlsplit(url).scheme.lower()
            if scheme not in DOWNLOAD_SCHEMES:
                raise self.fail("bad_response", f"{self.generator_id} pointed to a file at a "
                                                f"{scheme or 'schemeless'} URL; only http(s) is fetched")
            with self._send("GET", url) as response:
                status = response.status_code
                if response.is_redirect:
                    url = urljoin(url, response.headers["Location"])
                    continue
                if status >= 300:
                    kind = ("rate_limited" if status == 429 else
                            "unavailable" if status >= 500 else "bad_response")
                    raise self.fail(kind, f"the file URL {self.generator_id} gave answered "
                                          f"{status}", upstream_status=status,
                                    retry_after=parse_retry_after(response.headers))
                return self._read(response, max_bytes)
        raise self.fail("bad_response", f"the file URL {self.generator_id} gave redirected more "
                                        f"than {MAX_REDIRECTS} times")

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, url, stream=True, timeout=self.timeout,
                                        allow_redirects=False, **kwargs)
        except requests.exceptions.ConnectTimeout:
            raise self.fail("timeout", f"{self.generator_id} did not accept a connection in "
                                       "time") from None
        except requests.exceptions.ReadTimeout:
            raise self.fail("timeout", f"{self.generator_id} did not answer in time") from None
        except requests.exceptions.RequestException as exc:
            raise self.fail("unavailable", f"{self.generator_id} could not be reached: "
                                           f"{_short(exc)}") from None

    def _read(self, response: requests.Response, limit: int, *, cut: bool = False) -> bytes:
        """The body, refused (bad_response) past `limit` bytes; with `cut`, an error body is
        just cut there, and a failure to read it leaves what arrived."""
        declared = response.headers.get("Content-Length", "")
        if not cut and declared.isdigit() and int(declared) > limit:
            raise self.fail("bad_response", f"{self.generator_id} announced {declared} bytes, "
                                            f"over the {limit}-byte limit")
        parts: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    if cut:
                        parts.append(chunk[:limit - size])
                        break
                    raise self.fail("bad_response", f"{self.generator_id} sent more than "
                                                    f"{limit} bytes")
                parts.append(chunk)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                OSError) as exc:
            if not cut:
                kind = "timeout" if _timed_out(exc) else "unavailable"
                raise self.fail(kind, f"{self.generator_id} broke off its answer: "
                                      f"{_short(exc)}") from None
        return b"".join(parts)

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> GeneratorError:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        try:
            detail = self.read_error(status, parsed)
        except Exception:  # a body of an unexpected shape is still an error of that status
            detail = ErrorDetail()
        message = detail.message or (None if parsed is not None else
                                     body.decode("utf-8", "replace").strip()[:200] or None)
        if detail.refused:
            kind = "refused"
        elif status == 429:
            kind = "rate_limited"
        elif status in (401, 402, 403):  # 402: the account cannot pay, as good as no key
            kind = "unauthorized"
        elif status == 408 or status >= 500:
            kind = "unavailable"
        else:
            kind = "rejected"
        text = f"{self.generator_id} answered {status}" + (f": {message}" if message else "")
        return self.fail(kind, text, upstream_status=status,
                         retry_after=parse_retry_after(headers))

    # -------------------------------------------------------------------------- tasks

    def poll(self, fetch: Callable[[], T], finished: Callable[[T], bool],
             report: Callable[[T], None], what: str) -> T:
        """Fetch a provider's task until `finished` says so. `report` runs every round (it
        calls the job's progress, so a cancelled job stops here with `Cancelled`); between
        rounds the injected `sleep` waits `poll_interval`; after `task_timeout` in all it is
        a "timeout"."""
        deadline = self.clock() + self.settings.task_timeout
        while True:
            state = fetch()
            report(state)
            if finished(state):
                return state
            if self.clock() + self.settings.poll_interval > deadline:
                raise self.fail("timeout", f"{what} was not done after "
                                           f"{self.settings.task_timeout:g} s")
            self.sleep(self.settings.poll_interval)


# ------------------------------------------------------------------------------ prompts


def compose_prompt(request: GenerationRequest, generator_id: str, limit: int) -> str:
    """The provider's prompt: the description, the style, and for a texture what makes one
    usable (it must tile). Refused ("rejected") when longer than the provider takes."""
    description = request.description.strip()
    if request.category == "texture":
        prompt = (f"A seamless, tileable texture of {description}. It repeats without visible "
                  "seams or edges when tiled; flat, evenly lit, seen straight on, with no "
                  "objects, text or borders.")
    else:
        prompt = description
    if request.style:
        prompt += f" Style: {request.style.strip()}."
    if len(prompt) > limit:
        raise GeneratorError(generator_id, "rejected", f"the prompt is {len(prompt)} characters; "
                                                       f"{generator_id} takes at most {limit}")
    return prompt


# ------------------------------------------------------------------------------ options


def refuse_unknown(options: Mapping[str, Any], known: Iterable[str]) -> None:
    allowed = set(known)
    for name in options:
        if name not in allowed:
            raise OptionError(name, f"unknown option {name!r}; this generator takes "
                                    f"{', '.join(sorted(allowed)) or 'none'}")


def pick_choice(options: Mapping[str, Any], name: str, choices: Iterable[str],
                default: str | None) -> str | None:
    """The option's value from `choices`; unset or null means `default`."""
    value = _given(options, name, default)
    allowed = tuple(choices)
    if value is not None and (not isinstance(value, str) or value not in allowed):
        raise OptionError(name, f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def pick_number(options: Mapping[str, Any], name: str, low: float, high: float,
                default: float | None, *, integer: bool = False) -> float | None:
    value = _given(options, name, default)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise OptionError(name, f"{name} must be {'an integer' if integer else 'a number'}; "
                                f"got {value!r}")
    if not low <= value <= high:
        raise OptionError(name, f"{name} must be between {low:g} and {high:g}; got {value!r}")
    return value


def pick_flag(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = _given(options, name, default)
    if not isinstance(value, bool):
        raise OptionError(name, f"{name} must be true or false; got {value!r}")
    return value


def pick_text(options: Mapping[str, Any], name: str, max_length: int) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_length:
        raise OptionError(name, f"{name} must be a non-empty text of at most {max_length} "
                                "characters")
    return value.strip()


def _given(options: Mapping[str, Any], name: str, default: Any) -> Any:
    """A JSON null counts as not given, so checked options (with their None) check again."""
    value = options.get(name)
    return default if value is None else value


# ------------------------------------------------------------------------------ helpers


def _timed_out(exc: BaseException) -> bool:
    """Whether a failed body read was a timeout: requests wraps urllib3's ReadTimeoutError
    (or a socket timeout) in a ConnectionError while streaming."""
    timeouts = (urllib3.exceptions.TimeoutError, socket.timeout, requests.exceptions.Timeout)
    return isinstance(exc, timeouts) or any(isinstance(arg, timeouts) for arg in exc.args)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
