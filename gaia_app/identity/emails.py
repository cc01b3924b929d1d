"""Email addresses as accounts keep them: trimmed, lower-cased, plausibly shaped."""

from __future__ import annotations

import re

from gaia_app.errors import InvalidField

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 320


def normalize_email(email: str | None) -> str:
    """The stored form of `email`; `InvalidField("email")` when it cannot be an address."""
    email = (email or "").strip().lower()
    if not is_valid_email(email):
        raise InvalidField("email", f"{email!r} is not a valid email address.")
    return email


def is_valid_email(email: str | None) -> bool:
    email = (email or "").strip().lower()
    return len(email) <= MAX_EMAIL_LENGTH and _EMAIL_RE.match(email) is not None
