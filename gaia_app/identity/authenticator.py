"""Checking credentials: API keys (`gaia_...`) and JWTs (Gaia's own, Supabase's, or an
external issuer's; see `tokens`), into a `Principal` or a 401.

The hot path costs no database query in steady state: a credential's SHA-256 is looked up in
the `CredentialCache` first, changes reach every process through the invalidation bus, and
key use is handed to the `LastUsedRecorder` (written in batches, never by the request).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from gaia_app.errors import Unauthenticated
from gaia_app.extensions import db, release_connection
from gaia_app.identity.apikeys import hash_api_key, key_format_problem
from gaia_app.identity.cache import CredentialCache
from gaia_app.identity.principal import Principal, Refusal
from gaia_app.identity.provisioning import external_user
from gaia_app.identity.scopes import ADMIN, scopes_of_account
from gaia_app.identity.tokens import LEEWAY_SECONDS, TokenVerifier, VerifiedToken
from gaia_app.models import ApiKey, User
from gaia_app.runtime.clock import Clock
from gaia_app.runtime.invalidation import InvalidationBus
from gaia_app.runtime.last_used import LastUsedRecorder

# Built once: a key check only binds the hash.
_KEY_QUERY = (
    db.select(
        ApiKey.id, ApiKey.user_id, ApiKey.scopes, ApiKey.is_active, ApiKey.expires_at,
        ApiKey.rate_limit, User.is_active.label("user_active"), User.is_admin,
    )
    .join(User, User.id == ApiKey.user_id)
    .where(ApiKey.key_hash == db.bindparam("key_hash"))
)


class Authenticator:
    def __init__(
        self,
        settings,
        *,
        clock: Clock,
        bus: InvalidationBus,
        last_used: LastUsedRecorder,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.bus = bus
        self.last_used = last_used
        self.cache = CredentialCache(clock)
        self.cache.listen_to(bus)
        self.tokens = TokenVerifier(settings, clock)

    def authenticate(self, headers) -> Principal:
        credential = read_credential(headers)
        self.bus.ensure_listening()
        if credential.startswith("gaia_"):
            return self.authenticate_api_key(credential)
        if credential.count(".") == 2:
            return self.authenticate_jwt(credential)
        raise Unauthenticated("The credential is neither a Gaia API key nor a JSON Web Token.")

    def authenticate_api_key(self, key: str) -> Principal:
        problem = key_format_problem(key, self.settings.environment)
        if problem:
            raise Unauthenticated(problem)
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
            raise Unauthenticated(found.detail)
        if found.expires_at is not None and found.expires_at <= self.clock.now():
            raise Unauthenticated("The API key has expired.")
        self.last_used.touch(found.key_id)
        return found

    def authenticate_jwt(self, token: str) -> Principal:
        cache_key = "jwt:" + hash_api_key(token)
        found = self.cache.get(cache_key)
        if found is None:
            generation = self.cache.generation
            verified = self.tokens.verify(token)
            found = self._principal_for_token(verified)
            release_connection()
            if isinstance(found, Principal):
                remaining = (verified.expires_at - self.clock.now()).total_seconds()
                ttl = min(self.bus.ttl(self.settings.auth_cache_ttl), remaining + LEEWAY_SECONDS)
                self.cache.put(cache_key, found, ttl, generation)
        if isinstance(found, Refusal):
            raise Unauthenticated(found.detail)
        # The same leeway as at verification, so a cached token is not refused sooner.
        if found.expires_at + timedelta(seconds=LEEWAY_SECONDS) <= self.clock.now():
            raise Unauthenticated("The token has expired.")
        return found

    def _principal_for_token(self, token: VerifiedToken) -> Principal | Refusal:
        if token.issuer_kind == "gaia":
            try:
                user = db.session.get(User, uuid.UUID(token.subject))
            except ValueError:
                return Refusal("The token's subject is invalid.")
        else:
            user = external_user(token)
        if user is None:
            return Refusal("The account this token names does not exist.")
        if not user.is_active:
            return Refusal("The account is deactivated.", user.id)
        allowed = scopes_of_account(user.is_admin)
        return Principal(
            user_id=user.id,
            auth_type="jwt",
            scopes=allowed if token.scopes is None else token.scopes & allowed,
            is_admin=user.is_admin,
            expires_at=token.expires_at,
        )

    def _load_api_key(self, key_hash: str) -> Principal | Refusal:
        row = db.session.execute(_KEY_QUERY, {"key_hash": key_hash}).one_or_none()
        if row is None:
            return Refusal("The API key is not recognised.")
        if not row.is_active:
            return Refusal("The API key has been revoked.", row.user_id)
        if not row.user_active:
            return Refusal("The account that owns this API key is deactivated.", row.user_id)
        scopes = frozenset(row.scopes or ())
        if not row.is_admin:
            scopes -= {ADMIN}
        return Principal(
            user_id=row.user_id,
            auth_type="api_key",
            scopes=scopes,
            is_admin=row.is_admin,
            key_id=row.id,
            expires_at=row.expires_at,
            rate_limit=row.rate_limit,
        )


def read_credential(headers) -> str:
    """The key or token a request carries, from `X-API-Key` or `Authorization: Bearer`."""
    key = headers.get("X-API-Key")
    if key is not None:
        key = key.strip()
        if key:
            return key
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("The Authorization header must be 'Bearer <API key or JWT>'.")
        return value.strip()
    raise Unauthenticated(
        "Credentials are required: send 'X-API-Key: <key>' or 'Authorization: Bearer <key or JWT>'."
    )
