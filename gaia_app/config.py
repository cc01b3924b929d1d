"""Settings: read from the environment once, when the app factory runs, and validated.

Everything configurable lives in one frozen `Settings` object (kept at `gaia().settings`),
with the LLM providers' part in `settings.llm` (`providers.settings`). Nothing else in the
code reads ``os.environ``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gaia_app.constants import API_PREFIX, __version__
from gaia_app.environment import ConfigError, number
from gaia_app.jobs.settings import AssetSettings, load_asset_settings
from gaia_app.providers.settings import LLMSettings, load_llm_settings

SERVICES = ("gateway", "auth", "chat", "asset")
ENVIRONMENTS = ("local", "dev", "staging", "prod")
MIN_SECRET_BYTES = 32
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
# Each service's paths (each with everything below it): a gateway that does not mount the
# service forwards them to its `<NAME>_SERVICE_URL` (blueprints/gateway/forwarding.py).
SERVICE_PATHS = {
    "auth": tuple(API_PREFIX + path for path in ("/auth", "/keys", "/users")),
    "chat": tuple(
        API_PREFIX + path for path in ("/chat", "/providers", "/models", "/personas", "/conversations")
    ) + ("/v1",),
    "asset": tuple(API_PREFIX + path for path in ("/assets", "/jobs")),
}


@dataclass(frozen=True)
class Settings:
    services: tuple[str, ...]
    environment: str
    database_url: str
    redis_url: str | None
    secret_key: str
    build_id: str
    max_content_length: int
    rate_limit_default: str
    allowed_origins: tuple[str, ...]
    auth_cache_ttl: float
    auth_negative_cache_ttl: float
    last_used_flush_interval: float
    database_connect_timeout: int
    service_urls: Mapping[str, str] = field(default_factory=dict)
    gateway_connect_timeout: float = 3.0
    gateway_read_timeout: float = 300.0
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600
    key_rotation_grace: int = 24 * 3600
    rate_limit_on_error: str = "open"
    auth_rate_limit: str = "10/minute"
    trusted_proxy_count: int = 0
    supabase_jwt_secret: str | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    llm: LLMSettings = field(default_factory=LLMSettings)
    assets: AssetSettings = field(default_factory=AssetSettings)
    database_pool_size: int = 20
    database_max_overflow: int = 10

    @property
    def service_label(self) -> str:
        """What /health calls this process: `all` for the monolith, else the service list."""
        return "all" if self.services == SERVICES else ",".join(self.services)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def parse_services(value: str) -> tuple[str, ...]:
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not names or names == ["all"]:
        return SERVICES
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        raise ConfigError(
            f"SERVICE_NAME={value!r} names unknown service(s) {', '.join(unknown)}; "
            f"valid names are: all, {', '.join(SERVICES)} (or a comma list of them)"
        )
    # Keep the canonical order so that `chat,auth` and `auth,chat` mean the same.
    return tuple(name for name in SERVICES if name in names)


def normalize_database_url(url: str) -> str:
    """Accept what hosting platforms hand out and return what SQLAlchemy needs.

    Fly.io and Heroku give ``postgres://``, which SQLAlchemy refuses ("NoSuchModuleError:
    postgres"); plain ``postgresql://`` would pick psycopg2, which Gaia does not ship.
    Both become ``postgresql+psycopg://`` (psycopg 3).
    """
    url = url.strip()
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable>"


def _database_url(env: Mapping[str, str], instance_path: Path) -> str:
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
        return f"sqlite:///{instance_path / 'gaia.db'}"
    url = normalize_database_url(raw)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "DATABASE_URL is not a database URL; expected postgres://user:pass@host:5432/db "
            "or sqlite:///path/to/file.db"
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise ConfigError(
            f"DATABASE_URL {_safe_url(url)} uses an unsupported database; "
            "Gaia runs on PostgreSQL (postgres://, postgresql://) or SQLite (sqlite:///)"
        )
    return url


def _secret_key(env: Mapping[str, str], environment: str, instance_path: Path) -> str:
    secret = env.get("GAIA_SECRET_KEY", "")
    if secret:
        if len(secret.encode()) < MIN_SECRET_BYTES and environment != "local":
            raise ConfigError(
                f"GAIA_SECRET_KEY is {len(secret.encode())} bytes; at least {MIN_SECRET_BYTES} "
                "are required outside ENVIRONMENT=local (generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return secret
    if environment != "local":
        raise ConfigError(
            f"GAIA_SECRET_KEY is required when ENVIRONMENT={environment} "
            f"(at least {MIN_SECRET_BYTES} bytes)"
        )
    # Local development: make one once and keep it, so tokens survive restarts.
    path = instance_path / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        instance_path.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        return value
    except OSError as exc:
        raise ConfigError(f"cannot read the local secret key at {path}: {exc}") from None


def _build_id(env: Mapping[str, str], root: Path) -> str:
    explicit = env.get("GAIA_BUILD_ID", "").strip()
    if explicit:
        return explicit
    commit = _git_commit(root)
    return f"{__version__}+{commit[:12]}" if commit else __version__


def _git_commit(root: Path) -> str | None:
    """Read the checked-out commit from .git without running git (cheap, start-up only)."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        ref_file = git / ref
        if ref_file.exists():
            return ref_file.read_text().strip()
        packed = (git / "packed-refs").read_text()
    except OSError:
        return None
    for line in packed.splitlines():
        if line.endswith(" " + ref):
            return line.split(" ", 1)[0]
    return None


def load_settings(env: Mapping[str, str], instance_path: Path, project_root: Path) -> Settings:
    environment = env.get("ENVIRONMENT", "local").strip().lower() or "local"
    if environment not in ENVIRONMENTS:
        raise ConfigError(
            f"ENVIRONMENT={environment!r} is not one of: {', '.join(ENVIRONMENTS)}"
        )
    redis_url = env.get("REDIS_URL", "").strip() or None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    services = parse_services(env.get("SERVICE_NAME", "all"))
    return Settings(
        services=services,
        environment=environment,
        database_url=_database_url(env, instance_path),
        redis_url=redis_url,
        secret_key=_secret_key(env, environment, instance_path),
        build_id=_build_id(env, project_root),
        max_content_length=int(number(env, "MAX_CONTENT_LENGTH", 1024 * 1024, minimum=1024)),
        allowed_origins=tuple(
            origin.strip() for origin in env.get("ALLOWED_ORIGINS", "").split(",") if origin.strip()
        ),
        database_connect_timeout=int(number(env, "DATABASE_CONNECT_TIMEOUT", 3, minimum=1)),
        llm=load_llm_settings(env),
        assets=load_asset_settings(env),
        database_pool_size=int(number(env, "DATABASE_POOL_SIZE", 20, minimum=1)),
        database_max_overflow=int(number(env, "DATABASE_MAX_OVERFLOW", 10)),
        **_auth_settings(env, environment, redis_url),
        **_gateway_settings(env, services),
    )


def _gateway_settings(env: Mapping[str, str], services: tuple[str, ...]) -> dict:
    """Where the services this process does not mount are, and how long to wait for them.

    A `<NAME>_SERVICE_URL` that is set is always checked; one that is missing stops start-up
    only where it would be used: in a process that mounts the gateway but not that service.
    """
    urls = {}
    for name, paths in SERVICE_PATHS.items():
        variable = f"{name.upper()}_SERVICE_URL"
        raw = (env.get(variable) or "").strip()
        if raw:
            urls[name] = service_url(variable, raw)
        elif "gateway" in services and name not in services:
            together = ",".join(s for s in SERVICES if s in services or s == name)
            raise ConfigError(
                f"{variable} is not set: the gateway forwards {', '.join(paths)} to it "
                f"(set it to the {name} service's URL, such as http://gaia-{name}.internal:8080, "
                f"or serve {name} in this process: SERVICE_NAME={together})"
            )
    return {
        "service_urls": urls,
        "gateway_connect_timeout": _seconds(env, "GATEWAY_CONNECT_TIMEOUT", 3.0),
        "gateway_read_timeout": _seconds(env, "GATEWAY_READ_TIMEOUT", 300.0),
    }


def service_url(variable: str, raw: str) -> str:
    """The origin (scheme, host, port) a service's requests are forwarded to, from `raw`.

    No path: every Gaia service serves its paths from its root, and a base such as
    `http://chat:8080/api/v0.2` would double each forwarded path. No credentials: requests
    would turn them into an Authorization header that replaces the client's own.
    """
    parts = urlsplit(raw)
    example = f"http://gaia-{variable.split('_', 1)[0].lower()}.internal:8080"
    blank = any(char.isspace() for char in raw)
    if blank or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{variable}={raw!r} must be an http:// or https:// URL with a host, such as {example}"
        )
    if "@" in parts.netloc:  # the message leaves the value out: it holds a password
        raise ConfigError(f"{variable} must not hold credentials (user:password@ before the host)")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or parts.netloc.endswith(":"):
        raise ConfigError(f"{variable}={raw!r} has a bad port: it must be a number from 1 to 65535")
    if "?" in raw or "#" in raw or parts.path not in ("", "/"):
        raise ConfigError(
            f"{variable}={raw!r} must be the service's origin, without a path, query or "
            f"fragment (such as {example}): each request's own path and query are added to it"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return number(env, name, default, minimum=0.1)


def _auth_settings(env: Mapping[str, str], environment: str, redis_url: str | None) -> dict:
    """Credentials, sessions and rate limits."""
    on_error = env.get("RATE_LIMIT_ON_ERROR", "open").strip().lower()
    if on_error not in ("open", "closed"):
        raise ConfigError(f"RATE_LIMIT_ON_ERROR={on_error!r} must be open or closed")
    jwks_url = env.get("JWT_JWKS_URL", "").strip() or None
    jwt_issuer = env.get("JWT_ISSUER", "").strip() or None
    jwt_audience = env.get("JWT_AUDIENCE", "").strip() or None
    if jwks_url and not (jwt_issuer and jwt_audience):
        raise ConfigError("JWT_JWKS_URL needs JWT_ISSUER and JWT_AUDIENCE as well")
    supabase_secret = env.get("SUPABASE_JWT_SECRET", "") or None
    if supabase_secret and len(supabase_secret.encode()) < MIN_SECRET_BYTES and environment != "local":
        raise ConfigError(f"SUPABASE_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return {
        "rate_limit_default": _rate(env, "RATE_LIMIT_DEFAULT", "60/minute"),
        "auth_rate_limit": _rate(env, "AUTH_RATE_LIMIT", "10/minute"),
        "rate_limit_on_error": on_error,
        # With Redis, changes are pushed to every process, so entries can live longer.
        "auth_cache_ttl": number(env, "AUTH_CACHE_TTL", 60.0 if redis_url else 1.0),
        "auth_negative_cache_ttl": number(env, "AUTH_NEGATIVE_CACHE_TTL", 30.0),
        "last_used_flush_interval": number(env, "LAST_USED_FLUSH_INTERVAL", 30.0, minimum=0.05),
        "access_token_ttl": int(number(env, "ACCESS_TOKEN_TTL", 900, minimum=30)),
        "refresh_token_ttl": int(number(env, "REFRESH_TOKEN_TTL", 30 * 24 * 3600, minimum=300)),
        "key_rotation_grace": int(number(env, "KEY_ROTATION_GRACE", 24 * 3600)),
        "trusted_proxy_count": int(number(env, "TRUSTED_PROXY_COUNT", 0)),
        "supabase_jwt_secret": supabase_secret,
        "jwks_url": jwks_url,
        "jwt_issuer": jwt_issuer,
        "jwt_audience": jwt_audience,
    }


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    rate = env.get(name, default).strip()
    if not _RATE_RE.match(rate):
        raise ConfigError(
            f"{name}={rate!r} is not a rate like 60/minute (per second, minute, hour or day)"
        )
    return rate
