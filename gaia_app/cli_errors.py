"""How operator commands fail: one clear line and exit code 1, never a traceback.

Shared by `gaia_app.cli` and the command groups it registers from other rooms (such as
`gaia_app.jobs.cli`), which cannot import `gaia_app.cli` itself without an import cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn, TypeVar

import click
from flask.cli import with_appcontext
from sqlalchemy.exc import DBAPIError

from gaia_app.extensions import db, is_missing_schema

Command = TypeVar("Command", bound=Callable)


def fail(message: str) -> NoReturn:
    """Undo what the command changed and stop it with `message` (exit code 1)."""
    db.session.rollback()
    raise click.ClickException(message)


def database_command(command: Command) -> Command:
    """Run in an app context, and turn a missing schema or database into one clear line."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DBAPIError as exc:
            db.session.rollback()
            if is_missing_schema(exc):
                raise click.ClickException(
                    "the database has no Gaia schema: run `flask --app wsgi db upgrade` first"
                ) from None
            raise click.ClickException(f"database error: {str(exc.orig).strip().splitlines()[0]}") from None

    return with_appcontext(run)  # type: ignore[return-value]
