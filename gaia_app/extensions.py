"""Extension singletons, created without an app and bound in `create_app`, the two session
rules every service follows (`commits`, `release_connection`), and the one way a service
finds a row by the id a client gave (`parse_id`, `first_or_404`).

Flask-Migrate is bound only when a migration command runs (`database.configure_migrations`)."""

import uuid
from collections.abc import Callable
from functools import wraps

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, Select
from sqlalchemy.orm import DeclarativeBase

# Every constraint gets a predictable name, so migrations can drop and alter them on any backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)


def release_connection() -> None:
    """Give the session's connection back to the pool at once: a request that then waits (on
    a provider, say) or takes a connection of its own must not hold two."""
    db.session.close()


def commits(view):
    """The one place a request's changes are committed: after the view (and the service
    function it called) returned. A domain error raised before that rolls everything back
    (see `errors`), so a request is written whole or not at all."""
    @wraps(view)
    def committing(*args, **kwargs):
        result = view(*args, **kwargs)
        db.session.commit()
        return result

    return committing


# PostgreSQL's SQLSTATE for "relation does not exist".
_UNDEFINED_TABLE = "42P01"


def is_missing_schema(error) -> bool:
    """Whether a database error means the tables are not there (never migrated, or the
    wrong database): PostgreSQL says so by SQLSTATE, SQLite only in its message."""
    original = getattr(error, "orig", error)
    if getattr(original, "sqlstate", None) == _UNDEFINED_TABLE:
        return True
    return type(original).__module__.startswith("sqlite3") and "no such table" in str(original)


def parse_id(value: uuid.UUID | str | None) -> uuid.UUID | None:
    """A client's id as a UUID, or None when it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def first_or_404(statement_for: Callable[[uuid.UUID], Select], row_id, not_found: Exception):
    """The first row of `statement_for(id)` (a select already limited to what the caller may
    see); `not_found` raised when there is none or the id is no UUID, so that a malformed id,
    someone else's row and a missing one all look the same."""
    parsed = parse_id(row_id)
    row = db.session.execute(statement_for(parsed)).first() if parsed is not None else None
    if row is None:
        raise not_found
    return row
