"""Sign-in sessions: register, login, refresh (rotating), logout, and credential checks."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from flask import current_app

from gaia_app import accounts
from gaia_app.accounts import AccountError
from gaia_app.apikeys import hash_api_key
from gaia_app.errors import APIError
from gaia_app.extensions import db
from gaia_app.jwt_auth import issue_access_token
from gaia_app.models import RefreshToken, User, utcnow
from gaia_app.passwords import hash_password, needs_rehash, verify_password
from gaia_app.security import Principal, unauthorized

REFRESH_PREFIX = "grt_"


def _settings():
    return current_app.extensions["gaia"].settings


def _token_scopes(user: User) -> list[str]:
    return ["chat", "assets"] + (["admin"] if user.is_admin else [])


def _new_refresh_token(user: User, family_id: uuid.UUID) -> str:
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    db.session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=hash_api_key(token),
            expires_at=utcnow() + timedelta(seconds=_settings().refresh_token_ttl),
        )
    )
    return token


def issue_tokens(user: User, family_id: uuid.UUID | None = None) -> dict:
    """A fresh access token and refresh token; the caller commits."""
    access, expires_in = issue_access_token(_settings(), user.id, _token_scopes(user))
    refresh = _new_refresh_token(user, family_id or uuid.uuid4())
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "bearer",
        "expires_in": expires_in,
    }


def register(email: str, password: str, name: str | None) -> dict:
    try:
        user = accounts.create_user(email, name=name, password=password)
    except AccountError as exc:
        message = str(exc)
        status = 409 if "already exists" in message else 422
        field = "password" if "password" in message else "email"
        raise APIError(
            status, message[0].upper() + message[1:] + ".",
            type="/problems/conflict" if status == 409 else "/problems/validation",
            errors=None if status == 409 else [{"field": field, "location": "json", "message": message}],
        ) from None
    tokens = issue_tokens(user)
    db.session.commit()
    return {**tokens, "user": user}


def login(email: str, password: str) -> dict:
    try:
        user = accounts.find_user_by_email(email)
    except AccountError:
        user = None
    # The hash is checked even without an account, so timing tells nothing.
    valid = verify_password(user.password_hash if user else None, password)
    if not valid or user is None:
        raise unauthorized("The email or password is incorrect.")
    if not user.is_active:
        raise unauthorized("The account is deactivated.")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    tokens = issue_tokens(user)
    db.session.commit()
    return tokens


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


def refresh(token: str) -> dict:
    row = _find_refresh_token(token)
    if row is None:
        raise unauthorized("The refresh token is not recognised.")
    if row.revoked_at is not None:
        raise unauthorized("The refresh token has been revoked; sign in again.")
    if row.used_at is not None:
        # A used token coming back means it was copied: end every session of that login.
        _revoke_family(row.family_id)
        db.session.commit()
        raise unauthorized("The refresh token was already used; the session is revoked, sign in again.")
    if row.expires_at <= utcnow():
        raise unauthorized("The refresh token has expired; sign in again.")
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise unauthorized("The account is deactivated.")
    # Claim the token atomically, so two concurrent refreshes cannot both succeed.
    claimed = db.session.execute(
        db.update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=utcnow())
    ).rowcount
    if claimed != 1:
        _revoke_family(row.family_id)
        db.session.commit()
        raise unauthorized("The refresh token was already used; the session is revoked, sign in again.")
    tokens = issue_tokens(user, family_id=row.family_id)
    db.session.commit()
    return tokens


def logout(token: str) -> None:
    row = _find_refresh_token(token)
    if row is not None:
        _revoke_family(row.family_id)
        db.session.commit()


def validate_credential(authenticator, *, token: str | None, api_key: str | None) -> dict:
    try:
        if api_key is not None:
            principal: Principal = authenticator.authenticate_api_key(api_key)
        else:
            principal = authenticator.authenticate_jwt(token)
    except APIError as exc:
        if exc.status != 401:
            raise
        return {"valid": False, "reason": exc.detail}
    return {
        "valid": True,
        "auth_type": principal.auth_type,
        "user_id": principal.user_id,
        "scopes": sorted(principal.scopes),
        "expires_at": principal.expires_at,
    }
