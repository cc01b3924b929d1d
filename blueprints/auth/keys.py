"""The API-key lifecycle over HTTP: who may manage which key, on top of `gaia_app.accounts`.

Managing keys needs a signed-in session (JWT) or an admin key, so a leaked game-client key
cannot mint more keys. A new key's scopes stay within its maker's, only admins set a key's
rate limit, and someone else's key is a 404 like a missing one (admins see all).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from gaia_app import accounts
from gaia_app.errors import InsufficientScope, InvalidField, NotFound
from gaia_app.extensions import db
from gaia_app.identity.principal import Principal
from gaia_app.identity.scopes import ADMIN, DEFAULT_SCOPES
from gaia_app.models import ApiKey, User
from gaia_app.pagination import paginate

_VIEW_COLUMNS = (
    "id", "user_id", "name", "hint", "scopes", "rate_limit", "expires_at",
    "last_used_at", "revoked_at", "replaced_by_id", "created_at",
)


def key_manager(principal: Principal) -> Principal:
    if principal.auth_type != "jwt" and not principal.allows(ADMIN):
        raise InsufficientScope("Managing API keys needs a signed-in session (JWT) or an admin key.")
    return principal


def _visible_key(principal: Principal, key_id: str) -> ApiKey:
    key = accounts.get_api_key(key_id)
    if key is None or (key.user_id != principal.user_id and not principal.allows(ADMIN)):
        raise NotFound(f"No API key {key_id} among yours.")
    return key


def key_view(key: ApiKey, now: datetime, plaintext: str | None = None) -> dict:
    view = {column: getattr(key, column) for column in _VIEW_COLUMNS}
    view["state"] = accounts.key_state(key, now)
    if plaintext is not None:
        view["key"] = plaintext
    return view


def list_keys(principal: Principal, now: datetime, *, user_id: uuid.UUID | None,
              limit: int | None, cursor: str | None) -> dict:
    """The caller's keys (an admin may name another `user_id`), one page."""
    key_manager(principal)
    owner = principal.user_id
    if user_id is not None and user_id != principal.user_id:
        if not principal.allows(ADMIN):
            raise NotFound(f"No user {user_id} among those you can see.")
        owner = user_id
    rows, next_cursor = paginate(db.session, db.select(ApiKey).where(ApiKey.user_id == owner), ApiKey, limit, cursor)
    return {"keys": [key_view(key, now) for key in rows], "next_cursor": next_cursor}


# `expires_at` absent, as opposed to null (a key that never expires).
EXPIRY_NOT_GIVEN = object()


def create_key(principal: Principal, settings, now: datetime, *, name: str,
               scopes: list[str] | None = None, expires_at=EXPIRY_NOT_GIVEN,
               rate_limit: str | None = None) -> dict:
    """A new key for the caller; the only answer that ever holds the key itself.

    A key made with a session's token (a JWT) must say when it expires, null included: a
    session ends at logout or a password change, a key outlives it, so that is decided, not
    defaulted (docs/decisions.md). A key made with a key may leave it out (never expires).
    """
    key_manager(principal)
    if expires_at is EXPIRY_NOT_GIVEN:
        if principal.auth_type == "jwt":
            raise InvalidField("expires_at", "A key made with a signed-in session's token outlives "
                               "the session: give `expires_at` (a future time), or null for a key "
                               "that never expires.")
        expires_at = None
    scopes = scopes or [scope for scope in DEFAULT_SCOPES if principal.allows(scope)]
    beyond = [scope for scope in scopes if not principal.allows(scope)]
    if beyond:
        raise InsufficientScope(f"A key cannot hold scopes its maker lacks: {', '.join(beyond)}.")
    if rate_limit and not principal.allows(ADMIN):
        raise InsufficientScope("Only an admin can set a key's rate limit.")
    key, plaintext = accounts.create_api_key(
        db.session.get(User, principal.user_id), name=name, environment=settings.environment,
        scopes=scopes, expires_at=expires_at, rate_limit=rate_limit, now=now,
    )
    return key_view(key, now, plaintext)


def get_key(principal: Principal, now: datetime, key_id: str) -> dict:
    return key_view(_visible_key(key_manager(principal), key_id), now)


def revoke_key(principal: Principal, key_id: str) -> None:
    """Revoke a key (again: nothing changes); every service refuses it from then on."""
    accounts.revoke_api_key(_visible_key(key_manager(principal), key_id))


def rotate_key(principal: Principal, settings, now: datetime, key_id: str,
               grace_seconds: int | None = None) -> dict:
    """A new key in place of `key_id`; the old one works `grace_seconds` longer."""
    key = _visible_key(key_manager(principal), key_id)
    grace = settings.key_rotation_grace if grace_seconds is None else grace_seconds
    new_key, plaintext = accounts.rotate_api_key(
        key, environment=settings.environment, grace_seconds=grace, now=now
    )
    return {
        **key_view(new_key, now, plaintext),
        "replaces": key.id,
        "old_key_expires_at": key.expires_at if key.is_active else key.revoked_at,
    }
