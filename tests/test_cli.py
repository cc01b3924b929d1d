"""The operator CLI (`flask --app wsgi create-admin | keys ... | users ...`) on SQLite and
PostgreSQL, through Flask's CLI runner against the real database of each backend.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from gaia_app.extensions import db
from gaia_app.models import ApiKey, User
from gaia_app.state import gaia

MODELS = "/api/v0.2/models"
KEY_LINE_RE = re.compile(r"^API key: (gaia_local_[0-9A-Za-z]{49})$")


# --------------------------------------------------------------------------- helpers


def invoke(runner, *args):
    return runner.invoke(args=list(args))


def create_admin(app, runner, *args):
    """`create-admin` is a plain click command: it relies on the app context the `flask`
    command pushes (FlaskGroup.get_command), which Flask's CLI runner does not push; see
    test_create_admin_works_through_flasks_cli_runner."""
    with app.app_context():
        return runner.invoke(args=["create-admin", *args])


def ok(result):
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


def failed(result, *, code: int | None = None):
    """A refusal: non-zero exit, a message, and no Python exception escaping."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, (result.exit_code, result.output)
    # Click turns ClickException/UsageError into SystemExit; anything else is a crash.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    return result


def key_lines(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("API key:")]


def the_key(result) -> str:
    lines = key_lines(result)
    assert len(lines) == 1, result.output
    match = KEY_LINE_RE.fullmatch(lines[0])
    assert match, lines[0]
    return match.group(1)


def status(app, key: str, *, header: str = "X-API-Key") -> int:
    value = key if header == "X-API-Key" else f"Bearer {key}"
    return app.test_client().get(MODELS, headers={header: value}).status_code


def fresh_status(app, key: str) -> int:
    """The answer once the in-process credential cache no longer remembers the key."""
    gaia(app).authenticator.cache.clear()
    return status(app, key)


def count(app, table: str) -> int:
    with app.app_context():
        return db.session.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def key_row(app, plaintext: str) -> ApiKey:
    digest = hashlib.sha256(plaintext.encode()).hexdigest()
    with app.app_context():
        row = db.session.execute(db.select(ApiKey).where(ApiKey.key_hash == digest)).scalar_one()
        db.session.expunge(row)
        return row


def user_row(app, email: str) -> User | None:
    with app.app_context():
        row = db.session.execute(db.select(User).where(User.email == email)).scalar_one_or_none()
        if row is not None:
            db.session.expunge(row)
        return row


def all_stored_text(app) -> list[str]:
    """Every value of every row of every table, as text (what an attacker with a dump sees)."""
    values = []
    with app.app_context():
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(table.select()):
                values.extend(str(value) for value in row)
    return values


def make_admin(app, runner, email="admin@gaia.dev"):
    return the_key(ok(create_admin(app, runner, "--email", email)))


# --------------------------------------------------------------------------- create-admin


def test_create_admin_prints_one_working_key_and_stores_only_its_hash(app, runner):
    result = ok(create_admin(app, runner, "--email", "admin@gaia.dev"))
    key = the_key(result)
    assert "Created admin user admin@gaia.dev" in result.stdout
    assert result.stdout.count(key) == 1

    assert status(app, key) == 200
    assert status(app, key, header="Authorization") == 200

    row = key_row(app, key)
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", row.key_hash)
    assert set(row.scopes) == {"admin", "chat", "assets"}
    secret_part = key[len("gaia_local_"):]
    for value in all_stored_text(app):
        assert key not in value
        assert secret_part[:-4] not in value  # the hint may keep the last 4 chars, no more

    user = user_row(app, "admin@gaia.dev")
    assert user is not None and user.is_admin and user.is_active


def test_create_admin_works_through_flasks_cli_runner(app, runner):
    result = runner.invoke(args=["create-admin", "--email", "admin@gaia.dev"])
    assert status(app, the_key(ok(result))) == 200


def test_create_admin_again_finds_the_user_and_makes_a_new_key(app, runner):
    first = make_admin(app, runner)
    again = ok(create_admin(app, runner, "--email", "admin@gaia.dev"))
    second = the_key(again)
    assert "Found admin user admin@gaia.dev" in again.stdout
    assert second != first
    assert status(app, first) == 200
    assert status(app, second) == 200
    assert count(app, "users") == 1
    assert count(app, "api_keys") == 2


def test_create_admin_if_missing_makes_no_key_when_an_admin_exists(app, runner):
    make_admin(app, runner)
    keys_before = count(app, "api_keys")
    result = ok(create_admin(app, runner, "--email", "other@gaia.dev", "--if-missing"))
    assert key_lines(result) == []
    assert "gaia_local_" not in result.output
    assert "exists already" in result.output
    assert count(app, "api_keys") == keys_before
    assert user_row(app, "other@gaia.dev") is None


def test_create_admin_if_missing_makes_the_first_admin(app, runner, make):
    make.user("player@example.com")  # a non-admin does not count
    key = the_key(ok(create_admin(app, runner, "--email", "admin@gaia.dev", "--if-missing")))
    assert status(app, key) == 200
    assert user_row(app, "admin@gaia.dev").is_admin


def test_create_admin_email_is_case_insensitive(app, runner):
    make_admin(app, runner, "admin@gaia.dev")
    result = ok(create_admin(app, runner, "--email", "  Admin@GAIA.dev "))
    assert "Found admin user admin@gaia.dev" in result.stdout
    assert status(app, the_key(result)) == 200
    assert count(app, "users") == 1


def test_create_admin_promotes_an_existing_user(app, runner):
    ok(invoke(runner, "users", "create", "--email", "lead@gaia.dev"))
    assert not user_row(app, "lead@gaia.dev").is_admin
    result = ok(create_admin(app, runner, "--email", "lead@gaia.dev"))
    assert "Found admin user" in result.stdout
    assert user_row(app, "lead@gaia.dev").is_admin
    assert status(app, the_key(result)) == 200


def test_create_admin_refuses_an_invalid_email(app, runner):
    result = failed(create_admin(app, runner, "--email", "not-an-email"))
    assert "not a valid email" in result.output
    assert count(app, "users") == 0 and count(app, "api_keys") == 0


# --------------------------------------------------------------------------- keys create


def test_keys_create_prints_the_key_once_with_the_chosen_scopes(app, runner, make):
    make.user("player@example.com")
    result = ok(invoke(
        runner, "keys", "create", "--email", "Player@Example.com", "--name", "unity-client",
        "--scopes", "chat",
    ))
    key = the_key(result)
    assert result.output.count(key) == 1
    row = key_row(app, key)
    assert row.scopes == ["chat"] and row.name == "unity-client" and row.expires_at is None
    assert str(row.id) in result.stdout
    assert status(app, key) == 200


def test_keys_create_default_scopes(app, runner, make):
    make.user("player@example.com")
    key = the_key(ok(invoke(runner, "keys", "create", "--email", "player@example.com", "--name", "k")))
    assert sorted(key_row(app, key).scopes) == ["assets", "chat"]


def test_keys_create_expires_in(app, runner, make):
    make.user("player@example.com")
    before = datetime.now(timezone.utc)
    key = the_key(ok(invoke(
        runner, "keys", "create", "--email", "player@example.com", "--name", "k", "--expires-in", "30d",
    )))
    after = datetime.now(timezone.utc)
    expires = key_row(app, key).expires_at
    assert before + timedelta(days=30) - timedelta(seconds=1) <= expires
    assert expires <= after + timedelta(days=30) + timedelta(seconds=1)
    assert status(app, key) == 200


@pytest.mark.parametrize("offset", ["", "+02:00", "Z"])
def test_keys_create_expires_at(app, runner, make, offset):
    make.user("player@example.com")
    local = (datetime.now(timezone.utc) + timedelta(days=10)).replace(microsecond=0, tzinfo=None)
    zone = {"": timezone.utc, "Z": timezone.utc, "+02:00": timezone(timedelta(hours=2))}[offset]
    key = the_key(ok(invoke(
        runner, "keys", "create", "--email", "player@example.com", "--name", "k",
        "--expires-at", local.isoformat() + offset,
    )))
    assert key_row(app, key).expires_at == local.replace(tzinfo=zone)
    assert status(app, key) == 200


def test_keys_create_for_an_unknown_email_writes_nothing(app, runner):
    result = failed(invoke(runner, "keys", "create", "--email", "ghost@gaia.dev", "--name", "k"))
    assert "no user with email ghost@gaia.dev" in result.output
    assert "API key:" not in result.output
    assert count(app, "users") == 0 and count(app, "api_keys") == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scopes", "chat,telepathy"], "Unknown scope"),
        (["--scopes", " , "], "at least one scope"),
        (["--scopes", "admin"], "Only an admin user"),
        (["--scopes", "chat,admin"], "Only an admin user"),
        (["--expires-at", "2001-01-01T00:00:00"], "future"),
        (["--name", ""], "key name"),
        (["--name", "x" * 101], "key name"),
    ],
)
def test_keys_create_refusals_write_nothing(app, runner, make, extra, message):
    make.user("player@example.com")
    args = ["keys", "create", "--email", "player@example.com", "--name", "k", *extra]
    result = failed(invoke(runner, *args), code=1)
    assert message in result.output
    assert "API key:" not in result.output
    assert count(app, "api_keys") == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--expires-in", "2x"], "--expires-in"),
        (["--expires-in", "30"], "--expires-in"),
        (["--expires-at", "next tuesday"], "--expires-at"),
        (["--expires-in", "30d", "--expires-at", "2099-01-01"], "not both"),
    ],
)
def test_keys_create_bad_expiry_is_a_usage_error(app, runner, make, extra, message):
    make.user("player@example.com")
    args = ["keys", "create", "--email", "player@example.com", "--name", "k", *extra]
    result = failed(invoke(runner, *args), code=2)
    assert message in result.output
    assert count(app, "api_keys") == 0


def test_keys_create_absurd_lifetime_is_refused_cleanly(app, runner, make):
    make.user("player@example.com")
    result = invoke(
        runner, "keys", "create", "--email", "player@example.com", "--name", "k",
        "--expires-in", "1000000w",
    )
    failed(result)
    assert count(app, "api_keys") == 0


def test_keys_create_admin_scope_for_an_admin(app, runner):
    make_admin(app, runner)
    key = the_key(ok(invoke(
        runner, "keys", "create", "--email", "admin@gaia.dev", "--name", "ops", "--scopes", "admin",
    )))
    assert key_row(app, key).scopes == ["admin"]


def test_keys_create_for_a_deactivated_user_is_refused(app, runner, make):
    make.user("player@example.com", active=False)
    result = failed(invoke(runner, "keys", "create", "--email", "player@example.com", "--name", "k"))
    assert "deactivated" in result.output
    assert count(app, "api_keys") == 0


# --------------------------------------------------------------------------- keys list


def _list_lines(runner, *args) -> dict[str, str]:
    result = ok(invoke(runner, "keys", "list", *args))
    lines = {}
    for line in result.stdout.splitlines():
        first = line.split()[0]
        uuid.UUID(first)  # every line starts with the key id
        lines[first] = line
    return lines


def test_keys_list_when_empty(runner):
    assert ok(invoke(runner, "keys", "list")).stdout.strip() == "No API keys."


def test_keys_list_shows_hint_and_state_never_the_key_or_hash(app, runner, make):
    make.user("player@example.com")
    keys = {
        state: the_key(ok(invoke(
            runner, "keys", "create", "--email", "player@example.com", "--name", f"{state}-key",
        )))
        for state in ("active", "revoked", "expired")
    }
    rows = {state: key_row(app, key) for state, key in keys.items()}
    ok(invoke(runner, "keys", "revoke", str(rows["revoked"].id)))
    with app.app_context():  # time passes: the key's expiry is now behind us
        db.session.get(ApiKey, rows["expired"].id).expires_at = (
            datetime.now(timezone.utc) - timedelta(minutes=1)
        )
        db.session.commit()

    result = ok(invoke(runner, "keys", "list"))
    for state, key in keys.items():
        assert key not in result.output
        assert key[len("gaia_local_"):-4] not in result.output
        assert rows[state].key_hash not in result.output
        assert rows[state].key_hash[:16] not in result.output

    lines = _list_lines(runner)
    assert set(lines) == {str(row.id) for row in rows.values()}
    for state, row in rows.items():
        fields = lines[str(row.id)].split()
        assert fields[1] == row.hint == f"gaia_local_...{keys[state][-4:]}"
        assert fields[2] == state
        assert "player@example.com" in fields and f"{state}-key" in fields


def test_keys_list_filters_by_email(app, runner, make):
    admin_key = make_admin(app, runner)
    make.user("player@example.com")
    player_key = the_key(ok(invoke(runner, "keys", "create", "--email", "player@example.com", "--name", "p")))
    lines = _list_lines(runner, "--email", "PLAYER@example.com")
    assert list(lines) == [str(key_row(app, player_key).id)]
    assert str(key_row(app, admin_key).id) in _list_lines(runner)
    result = failed(invoke(runner, "keys", "list", "--email", "ghost@gaia.dev"))
    assert "no user with email" in result.output


# --------------------------------------------------------------------------- keys revoke


def test_keys_revoke_stops_the_key(app, runner):
    key = make_admin(app, runner)
    other = the_key(ok(invoke(runner, "keys", "create", "--email", "admin@gaia.dev", "--name", "k2")))
    assert status(app, key) == 200  # now in the credential cache
    row = key_row(app, key)

    result = ok(invoke(runner, "keys", "revoke", str(row.id)))
    assert f"Revoked key {row.id}" in result.output
    assert key not in result.output

    assert fresh_status(app, key) == 401
    body = app.test_client().get(MODELS, headers={"X-API-Key": key}).get_json(force=True)
    assert "revoked" in body["detail"]
    assert fresh_status(app, other) == 200  # only that key
    stored = key_row(app, key)
    assert stored.is_active is False and stored.revoked_at is not None


def test_keys_revoke_twice_says_already_revoked(app, runner):
    key = make_admin(app, runner)
    key_id = str(key_row(app, key).id)
    ok(invoke(runner, "keys", "revoke", key_id))
    revoked_at = key_row(app, key).revoked_at
    result = ok(invoke(runner, "keys", "revoke", key_id.upper()))
    assert "already revoked" in result.output
    assert key_row(app, key).revoked_at == revoked_at


@pytest.mark.parametrize("key_id", [str(uuid.uuid4()), "not-a-uuid", "42", ""])
def test_keys_revoke_unknown_or_malformed_id(app, runner, key_id):
    key = make_admin(app, runner)
    result = failed(invoke(runner, "keys", "revoke", key_id))
    assert "no API key with id" in result.output
    assert fresh_status(app, key) == 200


# --------------------------------------------------------------------------- users


def test_users_create_list_and_admin_flag(app, runner):
    assert ok(invoke(runner, "users", "list")).stdout.strip() == "No users."
    first = ok(invoke(runner, "users", "create", "--email", "Player@Example.com", "--name", "Pia"))
    assert "Created user player@example.com" in first.output
    second = ok(invoke(runner, "users", "create", "--email", "boss@gaia.dev", "--admin"))
    assert "as admin" in second.output
    assert "API key:" not in first.output + second.output
    assert count(app, "api_keys") == 0

    lines = ok(invoke(runner, "users", "list")).stdout.splitlines()
    assert len(lines) == 2
    by_email = {line.split()[1]: line.split() for line in lines}
    assert by_email["player@example.com"][2:] == ["active", "-", "Pia"]
    assert by_email["boss@gaia.dev"][2:] == ["active", "admin"]
    for email, fields in by_email.items():
        assert str(user_row(app, email).id) == fields[0]
    assert user_row(app, "boss@gaia.dev").is_admin
    assert not user_row(app, "player@example.com").is_admin


@pytest.mark.parametrize("again", ["dup@gaia.dev", "DUP@Gaia.Dev"])
def test_users_create_duplicate_is_refused(app, runner, again):
    ok(invoke(runner, "users", "create", "--email", "dup@gaia.dev"))
    result = failed(invoke(runner, "users", "create", "--email", again))
    assert "already exists" in result.output
    assert count(app, "users") == 1


@pytest.mark.parametrize("email", ["nope", "a@b", "two@@gaia.dev", "sp ace@gaia.dev", ""])
def test_users_create_invalid_email(app, runner, email):
    result = failed(invoke(runner, "users", "create", "--email", email))
    assert "not a valid email" in result.output
    assert count(app, "users") == 0


def test_users_create_overlong_name_is_refused_cleanly(app, runner):
    result = failed(invoke(runner, "users", "create", "--email", "long@gaia.dev", "--name", "n" * 300))
    assert "name" in result.output
    assert count(app, "users") == 0


def test_users_deactivate_stops_their_keys(app, runner, make):
    make.user("player@example.com")
    key = the_key(ok(invoke(runner, "keys", "create", "--email", "player@example.com", "--name", "k")))
    admin_key = make_admin(app, runner)
    assert status(app, key) == 200

    result = ok(invoke(runner, "users", "deactivate", "--email", "PLAYER@example.com"))
    assert "Deactivated player@example.com" in result.output
    assert fresh_status(app, key) == 401
    body = app.test_client().get(MODELS, headers={"X-API-Key": key}).get_json(force=True)
    assert "deactivated" in body["detail"]
    assert fresh_status(app, admin_key) == 200
    assert not user_row(app, "player@example.com").is_active
    line = [l for l in ok(invoke(runner, "users", "list")).stdout.splitlines() if "player@" in l]
    assert line and line[0].split()[2] == "inactive"

    again = ok(invoke(runner, "users", "deactivate", "--email", "player@example.com"))
    assert "already deactivated" in again.output


def test_users_deactivate_unknown_email(app, runner):
    result = failed(invoke(runner, "users", "deactivate", "--email", "ghost@gaia.dev"))
    assert "no user with email ghost@gaia.dev" in result.output
