"""Who is calling, as every service sees it once the credentials are checked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from gaia_app.identity.scopes import ADMIN


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    auth_type: str  # "api_key" or "jwt"
    scopes: frozenset[str]
    is_admin: bool
    key_id: uuid.UUID | None = None
    expires_at: datetime | None = None
    rate_limit: str | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def rate_limit_identity(self) -> str:
        return f"key:{self.key_id}" if self.key_id else f"user:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A cached "no", remembered with its user (when known) so user changes can clear it."""

    detail: str
    user_id: uuid.UUID | None = None
