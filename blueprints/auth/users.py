"""Accounts as the auth service shows them: the caller's own (`/auth/me`) and, for admins,
everybody's. An admin cannot deactivate, demote or delete themselves here (409), so the last
admin cannot lock everyone out by accident; `flask create-admin` remains for recovery."""

from __future__ import annotations

import uuid

from gaia_app import accounts
from gaia_app.errors import Conflict, NotFound
from gaia_app.extensions import db
from gaia_app.identity.principal import Principal
from gaia_app.models import User
from gaia_app.pagination import paginate

ACCOUNT_FIELDS = ("id", "email", "name", "is_active", "is_admin", "created_at", "updated_at")


def me(principal: Principal) -> dict:
    user = db.session.get(User, principal.user_id)
    if user is None:
        raise NotFound("The account no longer exists.")
    return {
        **{field: getattr(user, field) for field in ACCOUNT_FIELDS},
        "auth_type": principal.auth_type,
        "scopes": sorted(principal.scopes),
        "key_id": principal.key_id,
    }


def user_or_404(user_id: str | uuid.UUID) -> User:
    user = accounts.get_user(user_id)
    if user is None:
        raise NotFound(f"No user {user_id}.")
    return user


def list_users(*, limit: int | None, cursor: str | None, email: str | None = None) -> dict:
    query = db.select(User)
    if email:
        query = query.where(User.email == email.strip().lower())
    rows, next_cursor = paginate(db.session, query, User, limit, cursor)
    return {"users": rows, "next_cursor": next_cursor}


def create_user(*, email: str, is_admin: bool, name: str | None = None, password: str | None = None) -> User:
    return accounts.create_user(email, name=name, is_admin=is_admin, password=password)


def update_user(actor: Principal, user_id: str, changes: dict) -> User:
    user = user_or_404(user_id)
    if user.id == actor.user_id and (changes.get("is_admin") is False or changes.get("is_active") is False):
        raise Conflict("You cannot take away your own admin rights or access.")
    accounts.update_user(
        user,
        name=changes.get("name"),
        is_active=changes.get("is_active"),
        is_admin=changes.get("is_admin"),
        password=changes.get("password"),
    )
    return user


def delete_user(actor: Principal, user_id: str) -> None:
    user = user_or_404(user_id)
    if user.id == actor.user_id:
        raise Conflict("You cannot delete your own account here.")
    accounts.delete_user(user)
