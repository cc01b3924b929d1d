"""Authentication for every service: one `require_auth` decorator over one `Authenticator`.

Credentials are API keys (`gaia_...`) or JWTs (Gaia's own, Supabase's, or an external
issuer's; see `jwt_auth`). The hot path costs no database query in steady state: a
credential's SHA-256 is looked up in an in-process cache (positive entries for
`AUTH_CACHE_TTL` seconds, refusals of API keys for `AUTH_NEGATIVE_CACHE_TTL`), changes reach
every process through `invalidation`, and `last_used_at` is collected in memory and written in
one batch every `LAST_USED_FLUSH_INTERVAL` seconds by a background thread.
"""

from __future__ import annotations

import logging
import time
import uuid
from copy import deepcopy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import wraps

from flask import Flask, Response, current_app, g, request
from flask_smorest.utils import deepupdate
from sqlalchemy import and_, or_, update
from sqlalchemy.exc import IntegrityError

from gaia_app.apikeys import hash_api_key, key_format_problem
from gaia_app.batching import BackgroundBatcher
from gaia_app.config import Settings
from gaia_app.errors import APIError
from gaia_app.extensions import db
from gaia_app.invalidation import InvalidationBus
from gaia_app.jwt_auth import LEEWAY_SECONDS, TokenError, TokenVerifier, VerifiedToken
from gaia_app.models import ApiKey, User
from gaia_app.ratelimit import RateLimiter

log = logging.getLogger("gaia.auth")

SCOPES = ("chat", "assets", "admin")
DEFAULT_KEY_SCOPES = ("chat", "assets")
_CACHE_LIMIT = 50_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as every service sees it after authentication."""

    user_id: uuid.UUID
    auth_type: str  # "api_key" or "jwt"
    scopes: frozenset[str]
    is_admin: bool
    key_id: uuid.UUID | None = None
    expires_at: datetime | None = None
    rate_limit: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    @property
    def rate_limit_identity(self) -> str:
        return f"key:{self.key_id}" if self.key_id else f"user:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A cached "no", remembered with its user (when known) so user changes can clear it."""

    detail: str
    user_id: uuid.UUID | None = None


def unauthorized(detail: str) -> APIError:
    return APIError(
        401,
        detail,
        type="/problems/invalid-credentials",
        headers={"WWW-Authenticate": 'Bearer realm="gaia"'},
    )


class CredentialCache:
    """A small TTL map from credential hash to a Principal or a Refusal.

    Plain dict operations are atomic under the GIL, so readers take no lock.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | Refusal]] = {}
        # Bumped by every invalidation: an answer loaded before one must not be cached after it.
        self.generation = 0

    def get(self, key: str) -> Principal | Refusal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: str, value: Principal | Refusal, ttl: float, generation: int) -> None:
        """Cache `value`, loaded when the cache was at `generation`, unless it changed since."""
        if ttl <= 0 or generation != self.generation:
            return
        if len(self._entries) >= _CACHE_LIMIT:
            self._evict()
        self._entries[key] = (time.monotonic() + ttl, value)
        if generation != self.generation:
            # An invalidation landed between the check and the write (another thread).
            self._entries.pop(key, None)

    def _evict(self) -> None:
        now = time.monotonic()
        for key, (deadline, _) in list(self._entries.items()):
            if deadline < now:
                self._entries.pop(key, None)
        if len(self._entries) >= _CACHE_LIMIT:
            self._entries.clear()

    def drop(self, key: str) -> None:
        self.generation += 1
        self._entries.pop(key, None)

    def drop_user(self, user_id: uuid.UUID) -> None:
        self.generation += 1
        for key, (_, value) in list(self._entries.items()):
            if value.user_id == user_id:
                self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class LastUsedRecorder(BackgroundBatcher):
    """Collects key use in memory and writes `api_keys.last_used_at` in batches."""

    purpose = "record API key use"

    def __init__(self, app: Flask, interval: float) -> None:
        super().__init__(app, interval)
        self._pending: dict[uuid.UUID, float] = {}

    def touch(self, key_id: uuid.UUID) -> None:
        self._pending[key_id] = time.time()
        self._ensure_thread()

    def flush(self) -> int:
        """Write what has been collected; returns the number of keys written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return 0
        rows = [
            {"key_id": key_id, "used_at": datetime.fromtimestamp(ts, timezone.utc)}
            for key_id, ts in pending.items()
        ]
        statement = (
            update(ApiKey)
            .where(
                ApiKey.id == db.bindparam("key_id"),
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < db.bindparam("used_at")),
            )
            .values(last_used_at=db.bindparam("used_at"))
        )
        try:
            with self._app.app_context():
                with db.engine.begin() as connection:
                    connection.execute(statement, rows)
        except Exception:
            # Put them back (newer touches win) so that an outage loses nothing.
            for key_id, ts in pending.items():
                self._pending.setdefault(key_id, ts)
            raise
        return len(rows)


class Authenticator:
    def __init__(self, app: Flask, settings: Settings) -> None:
        self.settings = settings
        self.cache = CredentialCache()
        self.last_used = LastUsedRecorder(app, settings.last_used_flush_interval)
        self.tokens = TokenVerifier(settings)
        self.bus = InvalidationBus(settings, self.cache)
        self.rate_limiter = RateLimiter(settings)

    def authenticate(self, headers) -> Principal:
        credential = _read_credential(headers)
        self.bus.ensure_listening()
        if credential.startswith("gaia_"):
            return self.authenticate_api_key(credential)
        if credential.count(".") == 2:
            return self.authenticate_jwt(credential)
        raise unauthorized("The credential is neither a Gaia API key nor a JSON Web Token.")

    def authenticate_api_key(self, key: str) -> Principal:
        problem = key_format_problem(key, self.settings.environment)
        if problem:
            raise unauthorized(problem)
        key_hash = hash_api_key(key)
        found = self.cache.get(key_hash)
        if found is None:
            generation = self.cache.generation
            found = self._load_api_key(key_hash)
            release_connection()
            ttl = (
                self.bus.ttl(self.settings.auth_cache_ttl)
                if isinstance(found, Principal)
                else self.settings.auth_negative_cache_ttl
            )
            self.cache.put(key_hash, found, ttl, generation)
        if isinstance(found, Refusal):
            raise unauthorized(found.detail)
        if found.expires_at is not None and found.expires_at <= datetime.now(timezone.utc):
            raise unauthorized("The API key has expired.")
        self.last_used.touch(found.key_id)
        return found

    def authenticate_jwt(self, token: str) -> Principal:
        cache_key = "jwt:" + hash_api_key(token)
        found = self.cache.get(cache_key)
        if found is None:
            generation = self.cache.generation
            try:
                verified = self.tokens.verify(token)
            except TokenError as exc:
                raise unauthorized(str(exc)) from None
            found = self._principal_for_token(verified)
            release_connection()
            if isinstance(found, Principal):
                remaining = (verified.expires_at - datetime.now(timezone.utc)).total_seconds()
                ttl = min(self.bus.ttl(self.settings.auth_cache_ttl), remaining + LEEWAY_SECONDS)
                self.cache.put(cache_key, found, ttl, generation)
        if isinstance(found, Refusal):
            raise unauthorized(found.detail)
        # The same leeway as at verification, so a cached token is not refused sooner.
        if found.expires_at + timedelta(seconds=LEEWAY_SECONDS) <= datetime.now(timezone.utc):
            raise unauthorized("The token has expired.")
        return found

    def _principal_for_token(self, token: VerifiedToken) -> Principal | Refusal:
        if token.issuer_kind == "gaia":
            try:
                user = db.session.get(User, uuid.UUID(token.subject))
            except ValueError:
                return Refusal("The token's subject is invalid.")
        else:
            user = self._external_user(token)
        if user is None:
            return Refusal("The account this token names does not exist.")
        if not user.is_active:
            return Refusal("The account is deactivated.", user.id)
        allowed = {"chat", "assets"} | ({"admin"} if user.is_admin else set())
        scopes = frozenset(allowed if token.scopes is None else token.scopes & allowed)
        return Principal(
            user_id=user.id,
            auth_type="jwt",
            scopes=scopes,
            is_admin=user.is_admin,
            expires_at=token.expires_at,
        )

    def _external_user(self, token: VerifiedToken) -> User | None:
        """The user behind an external issuer's subject, made on first sight.

        Accounts are never linked by email: an issuer that lets people claim any address
        would otherwise hand them someone else's account.
        """
        subject = token.external_subject
        user = db.session.execute(
            db.select(User).where(User.external_subject == subject)
        ).scalar_one_or_none()
        if user is not None:
            return user
        from gaia_app.accounts import external_user_email

        user = User(
            email=external_user_email(token),
            external_subject=subject,
            is_active=True,
            is_admin=False,
        )
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            # Another request made it at the same moment.
            db.session.rollback()
            user = db.session.execute(
                db.select(User).where(User.external_subject == subject)
            ).scalar_one_or_none()
        log.info("made user %s for external subject of issuer %s", user.id if user else "?", token.issuer_kind)
        return user

    def _load_api_key(self, key_hash: str) -> Principal | Refusal:
        row = db.session.execute(
            db.select(
                ApiKey.id,
                ApiKey.user_id,
                ApiKey.scopes,
                ApiKey.is_active,
                ApiKey.expires_at,
                ApiKey.rate_limit,
                User.is_active.label("user_active"),
                User.is_admin,
            )
            .join(User, and_(User.id == ApiKey.user_id))
            .where(ApiKey.key_hash == key_hash)
        ).one_or_none()
        if row is None:
            return Refusal("The API key is not recognised.")
        if not row.is_active:
            return Refusal("The API key has been revoked.", row.user_id)
        if not row.user_active:
            return Refusal("The account that owns this API key is deactivated.", row.user_id)
        scopes = frozenset(row.scopes or ())
        if not row.is_admin:
            scopes -= {"admin"}
        return Principal(
            user_id=row.user_id,
            auth_type="api_key",
            scopes=scopes,
            is_admin=row.is_admin,
            key_id=row.id,
            expires_at=row.expires_at,
            rate_limit=row.rate_limit,
        )


def release_connection() -> None:
    """A credential check that read the database gives its connection back at once: a view
    that then waits (on a provider, say) or takes a connection of its own must not hold two."""
    db.session.close()


def _read_credential(headers) -> str:
    key = headers.get("X-API-Key")
    if key is not None:
        key = key.strip()
        if key:
            return key
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("The Authorization header must be 'Bearer <API key or JWT>'.")
        return value.strip()
    raise unauthorized(
        "Credentials are required: send 'X-API-Key: <key>' or 'Authorization: Bearer <key or JWT>'."
    )


def authenticator() -> Authenticator:
    return current_app.extensions["gaia"].authenticator


def current_principal() -> Principal:
    return g.principal


# Documented on every protected operation in the OpenAPI document.
SECURITY_REQUIREMENTS = [{"ApiKeyHeader": []}, {"BearerAuth": []}]


def require_auth(*scopes: str | Callable) -> Callable:
    """Guard a view: 401 without valid credentials, 403 without the named scopes.

    Usable bare (`@require_auth`) or with scopes (`@require_auth("chat")`).
    """
    if len(scopes) == 1 and callable(scopes[0]):
        return require_auth()(scopes[0])
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}")
    needed: tuple[str, ...] = tuple(scopes)  # type: ignore[arg-type]

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args, **kwargs):
            auth = authenticator()
            principal = auth.authenticate(request.headers)
            g.rate_limit = auth.rate_limiter.hit(
                "principal", principal.rate_limit_identity, principal.rate_limit
            )
            missing = [scope for scope in needed if not principal.allows(scope)]
            if missing:
                raise APIError(
                    403,
                    f"These credentials lack the scope(s): {', '.join(missing)}.",
                    type="/problems/insufficient-scope",
                )
            g.principal = principal
            return view(*args, **kwargs)

        responses = {
            "401": {"description": "Missing or invalid credentials", "content": _problem_content()},
            "429": {"description": "Rate limit exceeded", "content": _problem_content()},
        }
        if needed:
            responses["403"] = {"description": "Missing scope", "content": _problem_content()}
        guarded._apidoc = deepupdate(  # type: ignore[attr-defined]
            deepcopy(getattr(view, "_apidoc", {})),
            {"manual_doc": {"security": SECURITY_REQUIREMENTS, "responses": responses}},
        )
        guarded.required_scopes = needed  # type: ignore[attr-defined]
        return guarded

    return decorator


def add_rate_limit_headers(response: Response) -> Response:
    state = g.get("rate_limit")
    if state is not None:
        # Set only on successful authentication; a 429 carries its own (and sets no state).
        response.headers.update(state.headers())
    return response


def _problem_content() -> dict:
    return {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def register_security_schemes(spec) -> None:
    spec.components.security_scheme(
        "ApiKeyHeader", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    )
    spec.components.security_scheme(
        "BearerAuth",
        {"type": "http", "scheme": "bearer", "description": "A Gaia API key or a JWT"},
    )


def scopes_are_valid(scopes: Iterable[str]) -> bool:
    return set(scopes) <= set(SCOPES)
