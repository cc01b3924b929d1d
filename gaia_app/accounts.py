"""Users and API keys: the rules the CLI and the auth service share.

Like every service function, these change rows on the session and flush; the caller (a
route's `@commits`, or a CLI command) commits. A rule that does not hold raises a domain
error (`InvalidField`, `Conflict`) that names the field or the clash.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from sqlalchemy.exc import IntegrityError

from gaia_app.errors import Conflict, InvalidField
from gaia_app.extensions import db
from gaia_app.identity.apikeys import generate_api_key, hash_api_key, key_hint
from gaia_app.identity.emails import normalize_email
from gaia_app.identity.passwords import PasswordPolicyError, check_password_policy, hash_password
from gaia_app.identity.scopes import ADMIN, DEFAULT_SCOPES, SCOPES, unknown_scopes
from gaia_app.models import ApiKey, RefreshToken, User, utcnow
from gaia_app.runtime.invalidation import queue_invalidation

MAX_KEY_NAME = 100
MAX_USER_NAME = 200


def find_user_by_email(email: str) -> User | None:
    return db.session.execute(
        db.select(User).where(User.email == normalize_email(email))
    ).scalar_one_or_none()


def _check_name(name: str | None) -> None:
    if name is not None and len(name) > MAX_USER_NAME:
        raise InvalidField("name", f"A name can be at most {MAX_USER_NAME} characters.")


def create_user(
    email: str, *, name: str | None = None, is_admin: bool = False, password: str | None = None
) -> User:
    _check_name(name)
    user = User(email=normalize_email(email), name=name, is_admin=is_admin, is_active=True)
    if password is not None:
        set_password(user, password)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"A user with email {user.email} already exists.") from None
    return user


def ensure_admin(email: str, *, name: str | None = None) -> tuple[User, bool]:
    """The admin user for `email`, made (or promoted and reactivated) as needed."""
    _check_name(name)
    user = find_user_by_email(email)
    if user is None:
        return create_user(email, name=name, is_admin=True), True
    if not (user.is_admin and user.is_active):
        queue_invalidation(db.session, "user", user.id)
    user.is_admin = True
    user.is_active = True
    if name:
        user.name = name
    db.session.flush()
    return user, False


def any_admin_exists() -> bool:
    """Whether an active admin exists (a deactivated one cannot help anybody)."""
    return db.session.execute(
        db.select(User.id).where(User.is_admin.is_(True), User.is_active.is_(True)).limit(1)
    ).first() is not None


def validate_scopes(scopes: Iterable[str], *, user: User) -> list[str]:
    scopes = sorted(set(scopes))
    unknown = unknown_scopes(scopes)
    if unknown:
        raise InvalidField(
            "scopes", f"Unknown scope(s) {', '.join(unknown)}; valid scopes are {', '.join(SCOPES)}."
        )
    if ADMIN in scopes and not user.is_admin:
        raise InvalidField("scopes", "Only an admin user can hold a key with the admin scope.")
    if not scopes:
        raise InvalidField("scopes", "A key needs at least one scope.")
    return scopes


def create_api_key(
    user: User,
    *,
    name: str,
    environment: str,
    scopes: Iterable[str] | None = None,
    expires_at: datetime | None = None,
    rate_limit: str | None = None,
    now: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Make a key for `user`. Returns the row and the key itself, which is never stored."""
    name = (name or "").strip()
    if not name or len(name) > MAX_KEY_NAME:
        raise InvalidField("name", f"A key name must be 1 to {MAX_KEY_NAME} characters.")
    if not user.is_active:
        raise Conflict(f"User {user.email} is deactivated.")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=timezone.utc)
        if expires_at <= (now or utcnow()):
            raise InvalidField("expires_at", "expires_at must be in the future.")
    chosen = validate_scopes(DEFAULT_SCOPES if scopes is None else scopes, user=user)
    plaintext = generate_api_key(environment)
    key = ApiKey(
        user_id=user.id,
        name=name,
        key_hash=hash_api_key(plaintext),
        hint=key_hint(plaintext),
        scopes=chosen,
        is_active=True,
        expires_at=expires_at,
        rate_limit=rate_limit,
    )
    db.session.add(key)
    db.session.flush()
    return key, plaintext


def list_api_keys(user: User | None = None) -> list[ApiKey]:
    query = db.select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if user is not None:
        query = query.where(ApiKey.user_id == user.id)
    return list(db.session.execute(query).scalars())


def _get_by_id(model, row_id: str | uuid.UUID):
    """The row with this id, or None, also for a string that is no UUID at all."""
    try:
        row_uuid = row_id if isinstance(row_id, uuid.UUID) else uuid.UUID(str(row_id))
    except ValueError:
        return None
    return db.session.get(model, row_uuid)


def get_api_key(key_id: str | uuid.UUID) -> ApiKey | None:
    return _get_by_id(ApiKey, key_id)


def revoke_api_key(key: ApiKey) -> bool:
    """Revoke `key`; False when it was already revoked. Every process learns it on commit."""
    if not key.is_active:
        return False
    key.is_active = False
    key.revoked_at = utcnow()
    queue_invalidation(db.session, "key", key.key_hash)
    db.session.flush()
    return True


def list_users() -> list[User]:
    return list(db.session.execute(db.select(User).order_by(User.created_at, User.id)).scalars())


def deactivate_user(user: User) -> bool:
    if not user.is_active:
        return False
    user.is_active = False
    end_sessions(user.id)
    queue_invalidation(db.session, "user", user.id)
    db.session.flush()
    return True


def end_sessions(user_id: uuid.UUID) -> int:
    """Revoke every refresh token of the user, in every session ("sign out everywhere").

    Refresh tokens are checked in the database on every use, so this holds in every process
    at once. Access tokens already issued run out within ACCESS_TOKEN_TTL (15 minutes).
    """
    return db.session.execute(
        db.update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    ).rowcount


def key_state(key: ApiKey, now: datetime | None = None) -> str:
    if not key.is_active:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def rotate_api_key(
    key: ApiKey, *, environment: str, grace_seconds: int, now: datetime | None = None
) -> tuple[ApiKey, str]:
    """Replace `key` with a new one of the same name, scopes and limit.

    The old key keeps working for `grace_seconds` (so deployed clients can switch), then
    expires; with 0 it stops at once.
    """
    now = now or utcnow()
    if key_state(key, now) != "active":
        raise Conflict("Only an active key can be rotated.")
    user = db.session.get(User, key.user_id)
    new_key, plaintext = create_api_key(
        user,
        name=key.name,
        environment=environment,
        scopes=key.scopes,
        expires_at=key.expires_at,
        rate_limit=key.rate_limit,
        now=now,
    )
    grace_end = now + timedelta(seconds=max(grace_seconds, 0))
    if key.expires_at is None or key.expires_at > grace_end:
        key.expires_at = grace_end
    if grace_seconds <= 0:
        key.is_active = False
        key.revoked_at = now
    key.replaced_by_id = new_key.id
    queue_invalidation(db.session, "key", key.key_hash)
    db.session.flush()
    return new_key, plaintext


def update_user(
    user: User,
    *,
    name: str | None = None,
    is_active: bool | None = None,
    is_admin: bool | None = None,
    password: str | None = None,
) -> None:
    changed_rights = False
    _check_name(name)
    if name is not None:
        user.name = name
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        changed_rights = True
    if is_admin is not None and is_admin != user.is_admin:
        user.is_admin = is_admin
        changed_rights = True
    if password is not None:
        set_password(user, password)
    if password is not None or is_active is False:
        # A new password (a reset, or a suspected leak) or a suspension ends every session.
        end_sessions(user.id)
    if changed_rights:
        queue_invalidation(db.session, "user", user.id)
    db.session.flush()


def delete_user(user: User) -> None:
    """Delete a user with their keys, tokens, personas and preferences (cascades)."""
    for key in user.api_keys:
        queue_invalidation(db.session, "key", key.key_hash)
    queue_invalidation(db.session, "user", user.id)
    db.session.delete(user)
    db.session.flush()


def set_password(user: User, password: str) -> None:
    try:
        check_password_policy(password, email=user.email)
    except PasswordPolicyError as exc:
        raise InvalidField("password", f"The password {exc}.") from None
    user.password_hash = hash_password(password)


def get_user(user_id: str | uuid.UUID) -> User | None:
    return _get_by_id(User, user_id)
