"""`require_auth`: the one decorator that guards every protected route of every service.

401 without valid credentials, 429 past the caller's rate limit, 403 without the named
scopes; otherwise the view runs with `current_principal()` set. The decorator also documents
the security requirement and these answers in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from functools import wraps

from flask import Response, g, request
from flask_smorest.utils import deepupdate

from gaia_app.errors import InsufficientScope
from gaia_app.identity.principal import Principal
from gaia_app.identity.scopes import unknown_scopes
from gaia_app.state import gaia

# Documented on every protected operation in the OpenAPI document.
SECURITY_REQUIREMENTS = [{"ApiKeyHeader": []}, {"BearerAuth": []}]


def current_principal() -> Principal:
    return g.principal


def require_auth(*scopes: str | Callable) -> Callable:
    """Guard a view. Usable bare (`@require_auth`) or with scopes (`@require_auth("chat")`)."""
    if len(scopes) == 1 and callable(scopes[0]):
        return require_auth()(scopes[0])
    unknown = unknown_scopes(scopes)
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}")
    needed: tuple[str, ...] = tuple(scopes)  # type: ignore[arg-type]

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args, **kwargs):
            state = gaia()
            principal = state.authenticator.authenticate(request.headers)
            g.rate_limit = state.rate_limiter.hit(
                "principal", principal.rate_limit_identity, principal.rate_limit
            )
            missing = [scope for scope in needed if not principal.allows(scope)]
            if missing:
                raise InsufficientScope(f"These credentials lack the scope(s): {', '.join(missing)}.")
            g.principal = principal
            return view(*args, **kwargs)

        guarded._apidoc = deepupdate(  # type: ignore[attr-defined]
            deepcopy(getattr(view, "_apidoc", {})),
            {"manual_doc": {"security": SECURITY_REQUIREMENTS, "responses": _documented_answers(needed)}},
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


def _documented_answers(needed: tuple[str, ...]) -> dict:
    content = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    responses = {
        "401": {"description": "Missing or invalid credentials", "content": content},
        "429": {"description": "Rate limit exceeded", "content": content},
    }
    if needed:
        responses["403"] = {"description": "Missing scope", "content": content}
    return responses


def register_security_schemes(spec) -> None:
    spec.components.security_scheme(
        "ApiKeyHeader", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    )
    spec.components.security_scheme(
        "BearerAuth",
        {"type": "http", "scheme": "bearer", "description": "A Gaia API key or a JWT"},
    )
