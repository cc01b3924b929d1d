"""The scopes a credential can hold. No dependencies: everything else may import this."""

from __future__ import annotations

CHAT = "chat"
ASSETS = "assets"
ADMIN = "admin"
SCOPES = (CHAT, ASSETS, ADMIN)
# What a new key, and a signed-in session, get unless told otherwise; `admin` only comes
# with an admin account.
DEFAULT_SCOPES = (CHAT, ASSETS)


def scopes_of_account(is_admin: bool) -> frozenset[str]:
    """Every scope an account may hold."""
    return frozenset(DEFAULT_SCOPES + ((ADMIN,) if is_admin else ()))


def unknown_scopes(scopes) -> list[str]:
    return sorted(set(scopes) - set(SCOPES))
