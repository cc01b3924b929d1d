"""Routes of the auth service: sessions, credential checks, API keys and (admin) users."""

from __future__ import annotations

from flask import current_app, request
from flask_smorest import Blueprint

from blueprints.auth import sessions
from blueprints.auth.schemas import (
    CreatedKeySchema,
    CredentialsSchema,
    KeyCreateSchema,
    KeyListQuerySchema,
    KeyListSchema,
    KeyRotateSchema,
    KeySchema,
    MeSchema,
    RefreshSchema,
    RegisteredSchema,
    RegisterSchema,
    RotatedKeySchema,
    TokenPairSchema,
    UserCreateSchema,
    UserListQuerySchema,
    UserListSchema,
    UserSchema,
    UserUpdateSchema,
    ValidateSchema,
    ValidationResultSchema,
)
from gaia_app import API_PREFIX, accounts
from gaia_app.accounts import AccountError
from gaia_app.errors import APIError
from gaia_app.extensions import db
from gaia_app.models import ApiKey, User
from gaia_app.pagination import paginate
from gaia_app.security import Principal, authenticator, current_principal, require_auth

blp = Blueprint("auth", __name__, url_prefix=API_PREFIX, description="Accounts, sessions and API keys")


def _settings():
    return current_app.extensions["gaia"].settings


def _limit_client(scope: str, extra: str | None = None) -> None:
    """Per client address (and per account name, for logins): slows guessing down."""
    limiter = authenticator().rate_limiter
    limit = _settings().auth_rate_limit
    limiter.hit(f"{scope}-ip", request.remote_addr or "unknown", limit)
    if extra:
        limiter.hit(f"{scope}-account", extra.strip().lower()[:320], limit)


def _bad_request(exc: AccountError, field: str | None = None) -> APIError:
    message = str(exc)
    if "already exists" in message:
        return APIError(409, message[0].upper() + message[1:] + ".", type="/problems/conflict")
    errors = [{"field": field, "location": "json", "message": message}] if field else None
    return APIError(422, message[0].upper() + message[1:] + ".", type="/problems/validation", errors=errors)


# -- sessions ---------------------------------------------------------------------------


@blp.route("/auth/register", methods=["POST"])
@blp.arguments(RegisterSchema())
@blp.response(201, RegisteredSchema)
def register(body):
    """Make an account with email and password; answers with a signed-in session."""
    _limit_client("register")
    return sessions.register(body["email"], body["password"], body.get("name"))


@blp.route("/auth/login", methods=["POST"])
@blp.arguments(CredentialsSchema())
@blp.response(200, TokenPairSchema)
def login(body):
    """Exchange email and password for an access token (JWT) and a refresh token."""
    _limit_client("login", body["email"])
    return sessions.login(body["email"], body["password"])


@blp.route("/auth/refresh", methods=["POST"])
@blp.arguments(RefreshSchema())
@blp.response(200, TokenPairSchema)
def refresh(body):
    """Trade a refresh token for a new pair. Each refresh token works once."""
    _limit_client("refresh")
    return sessions.refresh(body["refresh_token"])


@blp.route("/auth/logout", methods=["POST"])
@blp.arguments(RefreshSchema())
@blp.response(204)
def logout(body):
    """End the session the refresh token belongs to (every token of that login)."""
    sessions.logout(body["refresh_token"])


@blp.route("/auth/validate", methods=["POST"])
@blp.arguments(ValidateSchema())
@blp.response(200, ValidationResultSchema)
def validate(body):
    """Say whether a JWT or an API key is valid now, and whose it is."""
    _limit_client("validate")
    return sessions.validate_credential(
        authenticator(), token=body.get("token"), api_key=body.get("api_key")
    )


@blp.route("/auth/me")
@require_auth
@blp.response(200, MeSchema)
def me():
    """The account behind the credentials of this request."""
    principal = current_principal()
    user = db.session.get(User, principal.user_id)
    if user is None:
        raise APIError(404, "The account no longer exists.")
    return {
        **{field: getattr(user, field) for field in UserSchema().fields},
        "auth_type": principal.auth_type,
        "scopes": sorted(principal.scopes),
        "key_id": principal.key_id,
    }


# -- API keys ---------------------------------------------------------------------------


def _key_manager() -> Principal:
    principal = current_principal()
    if principal.auth_type != "jwt" and not principal.allows("admin"):
        raise APIError(
            403,
            "Managing API keys needs a signed-in session (JWT) or an admin key.",
            type="/problems/insufficient-scope",
        )
    return principal


def _key_or_404(key_id: str, principal: Principal) -> ApiKey:
    key = accounts.get_api_key(key_id)
    if key is None or (key.user_id != principal.user_id and not principal.allows("admin")):
        raise APIError(404, f"No API key {key_id} among yours.", type="/problems/not-found")
    return key


def _key_view(key: ApiKey, plaintext: str | None = None) -> dict:
    view = {
        column: getattr(key, column)
        for column in (
            "id", "user_id", "name", "hint", "scopes", "rate_limit", "expires_at",
            "last_used_at", "revoked_at", "replaced_by_id", "created_at",
        )
    }
    view["state"] = accounts.key_state(key)
    if plaintext is not None:
        view["key"] = plaintext
    return view


@blp.route("/keys")
@require_auth
@blp.arguments(KeyListQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, KeyListSchema)
def list_keys(limit=None, cursor=None, user_id=None):
    """Your API keys (an admin may name another `user_id`). Never the keys themselves."""
    principal = _key_manager()
    owner = principal.user_id
    if user_id is not None and user_id != principal.user_id:
        if not principal.allows("admin"):
            raise APIError(404, f"No user {user_id} among those you can see.", type="/problems/not-found")
        owner = user_id
    query = db.select(ApiKey).where(ApiKey.user_id == owner)
    rows, next_cursor = paginate(db.session, query, ApiKey, limit, cursor)
    return {"keys": [_key_view(key) for key in rows], "next_cursor": next_cursor}


@blp.route("/keys", methods=["POST"])
@require_auth
@blp.arguments(KeyCreateSchema())
@blp.response(201, CreatedKeySchema)
def create_key(body):
    """Make an API key. This response is the only one that ever holds the key."""
    principal = _key_manager()
    scopes = body.get("scopes") or [s for s in ("chat", "assets") if principal.allows(s)]
    beyond = [scope for scope in scopes if not principal.allows(scope)]
    if beyond:
        raise APIError(
            403, f"A key cannot hold scopes its maker lacks: {', '.join(beyond)}.",
            type="/problems/insufficient-scope",
        )
    if body.get("rate_limit") and not principal.allows("admin"):
        raise APIError(403, "Only an admin can set a key's rate limit.", type="/problems/insufficient-scope")
    user = db.session.get(User, principal.user_id)
    try:
        key, plaintext = accounts.create_api_key(
            user,
            name=body["name"],
            environment=_settings().environment,
            scopes=scopes,
            expires_at=body.get("expires_at"),
        )
    except AccountError as exc:
        db.session.rollback()
        raise _bad_request(exc, "expires_at" if "expires_at" in str(exc) else None) from None
    key.rate_limit = body.get("rate_limit")
    db.session.commit()
    return _key_view(key, plaintext)


@blp.route("/keys/<key_id>")
@require_auth
@blp.response(200, KeySchema)
def get_key(key_id):
    """One of your API keys."""
    return _key_view(_key_or_404(key_id, _key_manager()))


@blp.route("/keys/<key_id>", methods=["DELETE"])
@require_auth
@blp.response(204)
def revoke_key(key_id):
    """Revoke a key: every service refuses it from the next second on."""
    key = _key_or_404(key_id, _key_manager())
    accounts.revoke_api_key(key)
    db.session.commit()


@blp.route("/keys/<key_id>/rotate", methods=["POST"])
@require_auth
@blp.arguments(KeyRotateSchema())
@blp.response(201, RotatedKeySchema)
def rotate_key(body, key_id):
    """Replace a key with a new one; the old one keeps working for `grace_seconds`."""
    key = _key_or_404(key_id, _key_manager())
    grace = body.get("grace_seconds", _settings().key_rotation_grace)
    try:
        new_key, plaintext = accounts.rotate_api_key(
            key, environment=_settings().environment, grace_seconds=grace
        )
    except AccountError as exc:
        db.session.rollback()
        raise APIError(409, str(exc)[0].upper() + str(exc)[1:] + ".", type="/problems/conflict") from None
    db.session.commit()
    return {
        **_key_view(new_key, plaintext),
        "replaces": key.id,
        "old_key_expires_at": key.expires_at if key.is_active else key.revoked_at,
    }


# -- users (admin) ----------------------------------------------------------------------


def _user_or_404(user_id: str) -> User:
    user = accounts.get_user(user_id)
    if user is None:
        raise APIError(404, f"No user {user_id}.", type="/problems/not-found")
    return user


@blp.route("/users")
@require_auth("admin")
@blp.arguments(UserListQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, UserListSchema)
def list_users(limit=None, cursor=None, email=None):
    """Every user, oldest first (admin)."""
    query = db.select(User)
    if email:
        query = query.where(User.email == email.strip().lower())
    rows, next_cursor = paginate(db.session, query, User, limit, cursor)
    return {"users": rows, "next_cursor": next_cursor}


@blp.route("/users", methods=["POST"])
@require_auth("admin")
@blp.arguments(UserCreateSchema())
@blp.response(201, UserSchema)
def create_user(body):
    """Make a user (admin); with a password they can sign in, else they use keys."""
    try:
        user = accounts.create_user(
            body["email"], name=body.get("name"), is_admin=body["is_admin"], password=body.get("password")
        )
    except AccountError as exc:
        db.session.rollback()
        raise _bad_request(exc, "password" if "password" in str(exc) else "email") from None
    db.session.commit()
    return user


@blp.route("/users/<user_id>")
@require_auth("admin")
@blp.response(200, UserSchema)
def get_user(user_id):
    """One user (admin)."""
    return _user_or_404(user_id)


@blp.route("/users/<user_id>", methods=["PATCH"])
@require_auth("admin")
@blp.arguments(UserUpdateSchema())
@blp.response(200, UserSchema)
def update_user(body, user_id):
    """Rename, deactivate or reactivate, grant or remove admin, set a password (admin)."""
    user = _user_or_404(user_id)
    if user.id == current_principal().user_id and (
        body.get("is_admin") is False or body.get("is_active") is False
    ):
        raise APIError(409, "You cannot take away your own admin rights or access.", type="/problems/conflict")
    try:
        accounts.update_user(
            user,
            name=body.get("name"),
            is_active=body.get("is_active"),
            is_admin=body.get("is_admin"),
            password=body.get("password"),
        )
    except AccountError as exc:
        db.session.rollback()
        raise _bad_request(exc, "password") from None
    db.session.commit()
    return user


@blp.route("/users/<user_id>", methods=["DELETE"])
@require_auth("admin")
@blp.response(204)
def delete_user(user_id):
    """Delete a user and everything they own: keys, sessions, personas (admin)."""
    user = _user_or_404(user_id)
    if user.id == current_principal().user_id:
        raise APIError(409, "You cannot delete your own account here.", type="/problems/conflict")
    accounts.delete_user(user)
    db.session.commit()
