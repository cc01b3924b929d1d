"""Routes of the auth service: sessions, credential checks, API keys and (admin) users."""

from __future__ import annotations

from functools import wraps

from flask import request

from blueprints.auth import keys, sessions, users
from blueprints.auth.schemas import (
    CreatedKeySchema,
    CredentialsSchema,
    KeyCreateSchema,
    KeyListQuerySchema,
    KeyListSchema,
    KeyRotateSchema,
    KeySchema,
    LogoutSchema,
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
from gaia_app.blueprint import Blueprint
from gaia_app.constants import API_PREFIX
from gaia_app.extensions import commits
from gaia_app.identity import current_principal, require_auth
from gaia_app.state import gaia

blp = Blueprint("auth", __name__, url_prefix=API_PREFIX, description="Accounts, sessions and API keys")


def _limited(action: str):
    """Count the attempt per client address before the body is read or validated."""
    def decorator(view):
        @wraps(view)
        def limited(*args, **kwargs):
            state = gaia()
            sessions.limit_address(state.rate_limiter, state.settings, action, request.remote_addr)
            return view(*args, **kwargs)

        return limited

    return decorator


# -- sessions ---------------------------------------------------------------------------


@blp.route("/auth/register", methods=["POST"])
@_limited("register")
@blp.arguments(RegisterSchema())
@blp.response(201, RegisteredSchema)
@commits
def register(body):
    """Make an account with email and password; answers with a signed-in session."""
    return sessions.register(gaia().settings, body["email"], body["password"], body.get("name"))


@blp.route("/auth/login", methods=["POST"])
@_limited("login")
@blp.arguments(CredentialsSchema())
@blp.response(200, TokenPairSchema)
@commits
def login(body):
    """Exchange email and password for an access token (JWT) and a refresh token."""
    state = gaia()
    sessions.limit_account(state.rate_limiter, state.settings, "login", body["email"])
    return sessions.login(state.settings, body["email"], body["password"])


@blp.route("/auth/refresh", methods=["POST"])
@_limited("refresh")
@blp.arguments(RefreshSchema())
@blp.response(200, TokenPairSchema)
@commits
def refresh(body):
    """Trade a refresh token for a new pair. Each refresh token works once."""
    return sessions.refresh(gaia().settings, body["refresh_token"])


@blp.route("/auth/logout", methods=["POST"])
@blp.arguments(LogoutSchema())
@blp.response(204)
@commits
def logout(body):
    """End the session the refresh token belongs to (every token of that login), or with
    `"everywhere": true` every session of the account."""
    sessions.logout(body["refresh_token"], everywhere=body["everywhere"])


@blp.route("/auth/validate", methods=["POST"])
@_limited("validate")
@blp.arguments(ValidateSchema())
@blp.response(200, ValidationResultSchema)
def validate(body):
    """Say whether a JWT or an API key is valid now, and whose it is."""
    return sessions.validate_credential(
        gaia().authenticator, token=body.get("token"), api_key=body.get("api_key")
    )


@blp.route("/auth/me")
@require_auth
@blp.response(200, MeSchema)
def me():
    """The account behind the credentials of this request."""
    return users.me(current_principal())


# -- API keys ---------------------------------------------------------------------------


@blp.route("/keys")
@require_auth
@blp.arguments(KeyListQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, KeyListSchema)
def list_keys(limit=None, cursor=None, user_id=None):
    """Your API keys (an admin may name another `user_id`). Never the keys themselves."""
    return keys.list_keys(current_principal(), gaia().clock.now(), user_id=user_id, limit=limit, cursor=cursor)


@blp.route("/keys", methods=["POST"])
@require_auth
@blp.arguments(KeyCreateSchema())
@blp.response(201, CreatedKeySchema)
@commits
def create_key(body):
    """Make an API key. This response is the only one that ever holds the key."""
    state = gaia()
    return keys.create_key(current_principal(), state.settings, state.clock.now(), **body)


@blp.route("/keys/<key_id>")
@require_auth
@blp.response(200, KeySchema)
def get_key(key_id):
    """One of your API keys."""
    return keys.get_key(current_principal(), gaia().clock.now(), key_id)


@blp.route("/keys/<key_id>", methods=["DELETE"])
@require_auth
@blp.response(204)
@commits
def revoke_key(key_id):
    """Revoke a key: every service refuses it from the next second on."""
    keys.revoke_key(current_principal(), key_id)


@blp.route("/keys/<key_id>/rotate", methods=["POST"])
@require_auth
@blp.arguments(KeyRotateSchema())
@blp.response(201, RotatedKeySchema)
@commits
def rotate_key(body, key_id):
    """Replace a key with a new one; the old one keeps working for `grace_seconds`."""
    state = gaia()
    return keys.rotate_key(current_principal(), state.settings, state.clock.now(), key_id,
                           body.get("grace_seconds"))


# -- users (admin) ----------------------------------------------------------------------


@blp.route("/users")
@require_auth("admin")
@blp.arguments(UserListQuerySchema(), location="query", as_kwargs=True)
@blp.response(200, UserListSchema)
def list_users(limit=None, cursor=None, email=None):
    """Every user, oldest first (admin)."""
    return users.list_users(limit=limit, cursor=cursor, email=email)


@blp.route("/users", methods=["POST"])
@require_auth("admin")
@blp.arguments(UserCreateSchema())
@blp.response(201, UserSchema)
@commits
def create_user(body):
    """Make a user (admin); with a password they can sign in, else they use keys."""
    return users.create_user(**body)


@blp.route("/users/<user_id>")
@require_auth("admin")
@blp.response(200, UserSchema)
def get_user(user_id):
    """One user (admin)."""
    return users.user_or_404(user_id)


@blp.route("/users/<user_id>", methods=["PATCH"])
@require_auth("admin")
@blp.arguments(UserUpdateSchema())
@blp.response(200, UserSchema)
@commits
def update_user(body, user_id):
    """Rename, deactivate or reactivate, grant or remove admin, set a password (admin)."""
    return users.update_user(current_principal(), user_id, body)


@blp.route("/users/<user_id>", methods=["DELETE"])
@require_auth("admin")
@blp.response(204)
@commits
def delete_user(user_id):
    """Delete a user and everything they own: keys, sessions, personas (admin)."""
    users.delete_user(current_principal(), user_id)
