"""Log lines: JSON when deployed, human-readable on the embedded default.

`LOG_FORMAT=json|text` chooses (default: `text` when `ENVIRONMENT=local`, else `json`).
Every line names the service (`SERVICE_NAME`) and, while a request or a task is handled, its
request id. JSON lines are python-json-logger's, one object per line: `timestamp`, `level`,
`logger`, `message`, `service`, `request_id`, plus what the caller adds (the access line adds
`method`, `route`, `path`, `status`, `latency_ms`, `user_id`).

Nothing Gaia logs carries a credential: no line is made from headers or bodies. As a second
line of defence, anything shaped like a Gaia API key, a JWT, a bearer token or a
`password=` pair is masked in messages and tracebacks before they are written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from gaia_app.environment import ConfigError
from gaia_app.request_ids import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s%(request_tag)s: %(message)s"
JSON_RENAMES = {"levelname": "level", "name": "logger"}
_SECRETS = re.compile(
    r"gaia_[a-z]+_[0-9A-Za-z]{20,}"  # Gaia API keys
    r"|eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"  # JWTs
    r"|(?i:bearer)\s+[\w.~+/=-]{8,}"
    r"|(?i:(?:password|secret|api_key|token)[\"']?\s*[=:]\s*[\"']?)[^\s\"',&]+"
)
MASK = "[redacted]"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def redact(text: str) -> str:
    return _SECRETS.sub(_mask, text) if text else text


def _mask(match: re.Match) -> str:
    found = match.group(0)
    for separator in ("=", ":"):
        name, sep, _ = found.partition(separator)
        if sep and name.strip("\"' ").lower() in ("password", "secret", "api_key", "token"):
            return name + sep + MASK
    return MASK


_service = {"name": "all"}


def set_service(name: str) -> None:
    """What this process's lines call their service (a Celery worker calls itself `worker`)."""
    _service["name"] = name


class ContextFilter(logging.Filter):
    """Adds `service` and `request_id` to every record its handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = _service["name"]
        request_id = current_request_id()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


class RedactingMixin:
    def formatException(self, ei):  # noqa: N802 - logging's name
        return redact(super().formatException(ei))


class TextFormatter(RedactingMixin, logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.msg, record.args = redact(record.getMessage()), None
        return super().format(record)


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    class GaiaJsonFormatter(RedactingMixin, JsonFormatter):
        def process_log_record(self, log_record):
            message = log_record.get("message")
            if isinstance(message, str):
                log_record["message"] = redact(message)
            log_record.pop("request_tag", None)
            return log_record

    return GaiaJsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields=JSON_RENAMES,
        timestamp=True,
    )


def log_format(env: Mapping[str, str]) -> str:
    chosen = env.get("LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    if chosen:
        raise ConfigError(f"LOG_FORMAT={chosen!r} must be json or text")
    return "text" if env.get("ENVIRONMENT", "local").strip().lower() in ("", "local") else "json"


def configure_logging(env: Mapping[str, str], service: str) -> None:
    """Give the root logger Gaia's handler, once per process; a program that configured
    logging itself (a test runner, an embedding app) keeps its own handlers."""
    level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in LEVELS:
        raise ConfigError(f"LOG_LEVEL={level!r} is not one of: {', '.join(LEVELS)}")
    set_service(service)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.addFilter(ContextFilter())
        if log_format(env) == "json":
            handler.setFormatter(json_formatter())
        else:
            handler.setFormatter(TextFormatter(TEXT_FORMAT))
        root.addHandler(handler)
        root.setLevel(level)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
