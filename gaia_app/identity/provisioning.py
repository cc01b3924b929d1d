"""Accounts for people first seen through an external issuer's token (Supabase, an OIDC
provider): made on first sight, found by `external_subject` afterwards.

Accounts are never linked by email: an issuer that lets people claim any address would
otherwise hand them someone else's account. The token's email is used only when no account
has it yet, else a placeholder under the reserved `.invalid` domain.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError

from gaia_app.extensions import db
from gaia_app.identity.apikeys import hash_api_key
from gaia_app.identity.emails import is_valid_email
from gaia_app.identity.tokens import VerifiedToken
from gaia_app.models import User

log = logging.getLogger("gaia.auth")


def external_user_email(token: VerifiedToken) -> str:
    email = (token.email or "").strip().lower()
    if is_valid_email(email) and db.session.execute(
        db.select(User.id).where(User.email == email)
    ).first() is None:
        return email
    digest = hash_api_key(token.external_subject)[:16]
    return f"{token.issuer_kind}-{digest}@external.invalid"


def _by_subject(subject: str) -> User | None:
    return db.session.execute(
        db.select(User).where(User.external_subject == subject)
    ).scalar_one_or_none()


def external_user(token: VerifiedToken) -> User | None:
    """The user behind an external issuer's subject, made (and committed) on first sight.

    This is the one write inside authentication: it commits on its own, before any view
    runs, so that the account exists whatever the request then does.
    """
    subject = token.external_subject
    user = _by_subject(subject)
    if user is not None:
        return user
    user = User(email=external_user_email(token), external_subject=subject, is_active=True, is_admin=False)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:
        # Another request made it at the same moment.
        db.session.rollback()
        user = _by_subject(subject)
    log.info("made user %s for external subject of issuer %s", user.id if user else "?", token.issuer_kind)
    return user
