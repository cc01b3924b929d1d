"""Operator commands: `flask --app wsgi create-admin | keys ... | users ... | jobs ...`.

A key is printed once, when it is made, and never again: only its hash is kept.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import click
from flask import Flask
from flask.cli import AppGroup

from gaia_app import accounts
from gaia_app.cli_errors import database_command
from gaia_app.cli_errors import fail as _fail
from gaia_app.errors import APIError
from gaia_app.extensions import db
from gaia_app.identity.scopes import SCOPES
from gaia_app.jobs.cli import jobs_cli
from gaia_app.state import gaia

keys_cli = AppGroup("keys", help="Create, list and revoke API keys.")
users_cli = AppGroup("users", help="List, create and deactivate users.")

_DURATION_RE = re.compile(r"^(\d{1,6})([hdw])$")
MAX_KEY_LIFETIME = timedelta(days=3650)


def _settings():
    return gaia().settings


def _parse_expiry(expires_in: str | None, expires_at: str | None) -> datetime | None:
    if expires_in and expires_at:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    now = datetime.now(timezone.utc)
    if expires_in:
        match = _DURATION_RE.match(expires_in.strip())
        if not match:
            raise click.UsageError("--expires-in takes a duration like 12h, 30d or 8w")
        amount, unit = int(match.group(1)), match.group(2)
        lifetime = timedelta(hours={"h": 1, "d": 24, "w": 24 * 7}[unit] * amount)
        if lifetime > MAX_KEY_LIFETIME:
            raise click.UsageError("--expires-in can be at most 10 years (3650d)")
        return now + lifetime
    if expires_at:
        try:
            parsed = datetime.fromisoformat(expires_at)
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
            parsed.astimezone(timezone.utc)
        except (ValueError, OverflowError):
            raise click.UsageError("--expires-at takes an ISO 8601 date or time") from None
        if parsed - now > MAX_KEY_LIFETIME:
            raise click.UsageError("--expires-at can be at most 10 years ahead")
        return parsed
    return None


def _user_or_fail(email: str):
    try:
        user = accounts.find_user_by_email(email)
    except APIError as exc:
        _fail(exc.detail)
    if user is None:
        _fail(f"no user with email {email.strip().lower()}")
    return user


@click.command("create-admin")
@database_command
@click.option("--email", required=True, help="The admin's email address.")
@click.option("--name", default=None, help="A display name.")
@click.option(
    "--if-missing",
    is_flag=True,
    help="Do nothing when an admin user already exists (for first-run scripts).",
)
def create_admin_command(email: str, name: str | None, if_missing: bool) -> None:
    """Make an admin user (or reuse it) and print a new API key for it, once."""
    if if_missing and accounts.any_admin_exists():
        click.echo("An admin user exists already; no key made. "
                   "Run `flask --app wsgi create-admin --email EMAIL` for a new key.")
        return
    try:
        user, created = accounts.ensure_admin(email, name=name)
        _, plaintext = accounts.create_api_key(
            user,
            name="admin",
            environment=_settings().environment,
            scopes=SCOPES,
        )
    except APIError as exc:
        _fail(exc.detail)
    db.session.commit()
    click.echo(f"{'Created' if created else 'Found'} admin user {user.email} ({user.id})")
    click.echo(f"API key: {plaintext}")
    click.echo("Store it now: it is shown only this once.", err=True)


@keys_cli.command("create", with_appcontext=False)
@database_command
@click.option("--email", required=True, help="The user the key belongs to.")
@click.option("--name", required=True, help="What the key is for, e.g. 'unity-client'.")
@click.option("--scopes", default="chat,assets", show_default=True, help="Comma list of scopes.")
@click.option("--expires-in", default=None, help="A lifetime such as 12h, 30d or 8w.")
@click.option("--expires-at", default=None, help="An ISO 8601 expiry time (UTC if no offset).")
def create_key_command(email, name, scopes, expires_in, expires_at) -> None:
    """Make an API key and print it once."""
    user = _user_or_fail(email)
    expiry = _parse_expiry(expires_in, expires_at)
    try:
        key, plaintext = accounts.create_api_key(
            user,
            name=name,
            environment=_settings().environment,
            scopes=[s.strip() for s in scopes.split(",") if s.strip()],
            expires_at=expiry,
        )
    except APIError as exc:
        _fail(exc.detail)
    db.session.commit()
    click.echo(f"Created key {key.id} ({key.hint}) for {user.email}, scopes {','.join(key.scopes)}")
    click.echo(f"API key: {plaintext}")


@keys_cli.command("list", with_appcontext=False)
@database_command
@click.option("--email", default=None, help="Only this user's keys.")
def list_keys_command(email: str | None) -> None:
    """List keys (never the keys themselves)."""
    user = _user_or_fail(email) if email else None
    rows = accounts.list_api_keys(user)
    if not rows:
        click.echo("No API keys.")
        return
    for key in rows:
        state = accounts.key_state(key)
        click.echo(
            f"{key.id}  {key.hint:<22} {state:<8} {key.user.email:<30} {key.name:<20} "
            f"scopes={','.join(key.scopes)} "
            f"expires={key.expires_at.isoformat() if key.expires_at else '-'} "
            f"last_used={key.last_used_at.isoformat() if key.last_used_at else '-'}"
        )


@keys_cli.command("revoke", with_appcontext=False)
@database_command
@click.argument("key_id")
def revoke_key_command(key_id: str) -> None:
    """Revoke the key with this id (see `keys list`)."""
    key = accounts.get_api_key(key_id)
    if key is None:
        _fail(f"no API key with id {key_id}")
    if accounts.revoke_api_key(key):
        db.session.commit()
        click.echo(f"Revoked key {key.id} ({key.hint}).")
    else:
        click.echo(f"Key {key.id} ({key.hint}) was already revoked.")


@users_cli.command("list", with_appcontext=False)
@database_command
def list_users_command() -> None:
    """List users."""
    rows = accounts.list_users()
    if not rows:
        click.echo("No users.")
        return
    for user in rows:
        click.echo(
            f"{user.id}  {user.email:<30} {'active' if user.is_active else 'inactive':<8} "
            f"{'admin' if user.is_admin else '-':<5} {user.name or ''}"
        )


@users_cli.command("create", with_appcontext=False)
@database_command
@click.option("--email", required=True)
@click.option("--name", default=None)
@click.option("--admin", "is_admin", is_flag=True, help="Make the user an admin.")
def create_user_command(email: str, name: str | None, is_admin: bool) -> None:
    """Make a user (without a key: see `keys create`)."""
    try:
        user = accounts.create_user(email, name=name, is_admin=is_admin)
    except APIError as exc:
        _fail(exc.detail)
    db.session.commit()
    click.echo(f"Created user {user.email} ({user.id}){' as admin' if is_admin else ''}.")


@users_cli.command("deactivate", with_appcontext=False)
@database_command
@click.option("--email", required=True)
def deactivate_user_command(email: str) -> None:
    """Deactivate a user: all their keys stop working."""
    user = _user_or_fail(email)
    if accounts.deactivate_user(user):
        db.session.commit()
        click.echo(f"Deactivated {user.email}.")
    else:
        click.echo(f"{user.email} was already deactivated.")


def register_cli(app: Flask) -> None:
    app.cli.add_command(create_admin_command)
    app.cli.add_command(keys_cli)
    app.cli.add_command(users_cli)
    app.cli.add_command(jobs_cli)
