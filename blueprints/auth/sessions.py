"""Sign-in sessions: register, login, refresh (rotating), logout, and credential checks.

Sign-up, login, refresh and validate are limited per client address (and login per account
name too), so guessing is slow from one address and for one account.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from gaia_app import accounts
from gaia_app.errors import InvalidField, Unauthenticated
from gaia_app.extensions import db
from gaia_app.identity.apikeys import hash_api_key
from gaia_app.identity.authenticator import Authenticator
from gaia_app.identity.passwords import hash_password, needs_rehash, verify_password
from gaia_app.identity.principal import Principal
from gaia_app.identity.scopes import scopes_of_account
from gaia_app.identity.tokens import issue_access_token
from gaia_app.models import RefreshToken, User, utcnow
from gaia_app.runtime.ratelimit import RateLimiter

REFRESH_PREFIX = "grt_"


def limit_address(limiter: RateLimiter, settings, action: str, client: str | None) -> None:
    """Count one attempt of `action` from `client`; 429 past the limit. Runs before the body
    is read, so a flood of bad bodies is limited like any other attempt."""
    limiter.hit(f"{action}-ip", client or "unknown", settings.auth_rate_limit)


def limit_account(limiter: RateLimiter, settings, action: str, account: str) -> None:
    """Count one attempt of `action` on `account`, whatever address it comes from."""
    limiter.hit(f"{action}-account", account.strip().lower()[:320], settings.auth_rate_limit)


def _new_refresh_token(settings, user: User, family_id: uuid.UUID) -> str:
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    db.session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=hash_api_key(token),
            expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl),
        )
    )
    return token


def issue_tokens(settings, user: User, family_id: uuid.UUID | None = None) -> dict:
    """A fresh access token and refresh token; the caller commits."""
    access, expires_in = issue_access_token(settings, user.id, sorted(scopes_of_account(user.is_admin)))
    refresh_token = _new_refresh_token(settings, user, family_id or uuid.uuid4())
    return {
        "access_token": access,
        "refresh_token": refresh_token,
        "token_type": "bearer",
        "expires_in": expires_in,
    }


def register(settings, email: str, password: str, name: str | None) -> dict:
    user = accounts.create_user(email, name=name, password=password)
    return {**issue_tokens(settings, user), "user": user}


def login(settings, email: str, password: str) -> dict:
    try:
        user = accounts.find_user_by_email(email)
    except InvalidField:
        user = None
    # The hash is checked even without an account, so timing tells nothing.
    valid = verify_password(user.password_hash if user else None, password)
    if not valid or user is None:
        raise Unauthenticated("The email or password is incorrect.")
    if not user.is_active:
        raise Unauthenticated("The account is deactivated.")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return issue_tokens(settings, user)


def _find_refresh_token(token: str) -> RefreshToken | None:
    if not token.startswith(REFRESH_PREFIX) or len(token) > 100:
        return None
    return db.session.execute(
        db.select(RefreshToken).where(RefreshToken.token_hash == hash_api_key(token))
    ).scalar_one_or_none()


def _revoke_family(family_id: uuid.UUID) -> None:
    db.session.execute(
        db.update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def _refuse_reuse(family_id: uuid.UUID) -> Unauthenticated:
    """A used token coming back means it was copied: end every session of that login.

    The one refusal that must leave a trace, so it commits before the error is raised."""
    _revoke_family(family_id)
    db.session.commit()
    return Unauthenticated("The refresh token was already used; the session is revoked, sign in again.")


def refresh(settings, token: str) -> dict:
    row = _find_refresh_token(token)
    if row is None:
        raise Unauthenticated("The refresh token is not recognised.")
    if row.revoked_at is not None:
        raise Unauthenticated("The refresh token has been revoked; sign in again.")
    if row.used_at is not None:
        raise _refuse_reuse(row.family_id)
    if row.expires_at <= utcnow():
        raise Unauthenticated("The refresh token has expired; sign in again.")
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise Unauthenticated("The account is deactivated.")
    # Claim the token atomically, so two concurrent refreshes cannot both succeed.
    claimed = db.session.execute(
        db.update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=utcnow())
    ).rowcount
    if claimed != 1:
        raise _refuse_reuse(row.family_id)
    return issue_tokens(settings, user, family_id=row.family_id)


def logout(token: str, *, everywhere: bool = False) -> None:
    """End the session of this refresh token, or (`everywhere`) every session of its user."""
    row = _find_refresh_token(token)
    if row is None:
        return
    if everywhere:
        accounts.end_sessions(row.user_id)
    else:
        _revoke_family(row.family_id)


def validate_credential(authenticator: Authenticator, *, token: str | None, api_key: str | None) -> dict:
    try:
        if api_key is not None:
            principal: Principal = authenticator.authenticate_api_key(api_key)
        else:
            principal = authenticator.authenticate_jwt(token)
    except Unauthenticated as refusal:
        return {"valid": False, "reason": refusal.detail}
    return {
        "valid": True,
        "auth_type": principal.auth_type,
        "user_id": principal.user_id,
        "scopes": sorted(principal.scopes),
        "expires_at": principal.expires_at,
    }
