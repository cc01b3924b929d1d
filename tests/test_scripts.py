"""The shell scripts and the `flask` entry point, run as real subprocesses, the way an
operator runs them.

The scripts install requirements into the virtualenv when its install stamp is missing or
stale. The tests point GAIA_VENV at a throw-away view of the project's .venv (symlinks plus
an up-to-date stamp) so that they never run pip; PIP_NO_INDEX makes sure that, if the stamp
logic ever changed, pip still could not reach a package index.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_VENV = Path(sys.prefix) if sys.prefix != sys.base_prefix else ROOT / ".venv"
INIT_DATABASE = ROOT / "scripts" / "init-database.sh"
TIMEOUT = 60

# The scripts get only these from the test's environment, plus what each test sets: no
# DATABASE_URL, REDIS_URL, SERVICE_NAME, GAIA_VENV, PIP_* or proxies of a developer's shell.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")


@pytest.fixture(scope="session")
def venv_view(tmp_path_factory) -> Path:
    """A GAIA_VENV that is the project's .venv with a current install stamp for requirements.txt."""
    view = tmp_path_factory.mktemp("venv")
    for entry in PROJECT_VENV.iterdir():
        if not entry.name.startswith(".installed-"):
            (view / entry.name).symlink_to(entry)
    requirements = (ROOT / "requirements.txt").read_bytes()
    # _venv.sh hashes requirements.txt followed by the requirements file being ensured.
    digest = hashlib.sha256(requirements + requirements).hexdigest()
    (view / ".installed-requirements.txt").write_text(digest + "\n")
    return view


@pytest.fixture
def script_env(tmp_path, venv_view) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    instance = tmp_path / "instance"
    instance.mkdir()
    env.update(
        GAIA_INSTANCE_PATH=str(instance),
        GAIA_VENV=str(venv_view),
        PIP_NO_INDEX="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        NO_PROXY="*",
    )
    return env


def run(args, env, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def key_from(output: str, environment: str) -> str:
    keys = re.findall(rf"^API key: (gaia_{environment}_[0-9A-Za-z]{{49}})$", output, re.MULTILINE)
    assert len(keys) == 1, output
    return keys[0]


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


# --------------------------------------------------------------------------- init-database.sh


def test_init_database_local_on_sqlite(tmp_path, script_env):
    database = tmp_path / "gaia.db"
    env = dict(script_env, DATABASE_URL=f"sqlite:///{database}")
    # From another directory: the script must find the project by itself.
    result = run([INIT_DATABASE, "--env", "local", "--user", "Ops@Gaia.dev", "--name", "Ops"], env,
                 cwd=tmp_path)
    assert result.returncode == 0, describe(result)
    key = key_from(result.stdout, "local")
    assert "gaia: installing" not in result.stderr  # the stamp is current: no pip run
    assert "Traceback" not in result.stderr

    with closing(sqlite3.connect(database)) as connection:
        personas = [row[0] for row in connection.execute("SELECT name FROM personas")]
        users = connection.execute("SELECT email, is_admin, is_active, name FROM users").fetchall()
        hashes = [row[0] for row in connection.execute("SELECT key_hash FROM api_keys")]
        version = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert personas == ["Mu"]
    assert users == [("ops@gaia.dev", 1, 1, "Ops")]
    assert hashes == [sha256(key)]
    assert len(version) == 1


def test_init_database_local_without_database_url_uses_the_instance_folder(script_env):
    result = run([INIT_DATABASE, "--env", "local", "--user", "ops@gaia.dev"], script_env)
    assert result.returncode == 0, describe(result)
    key = key_from(result.stdout, "local")
    database = Path(script_env["GAIA_INSTANCE_PATH"]) / "gaia.db"
    with closing(sqlite3.connect(database)) as connection:
        assert [row[0] for row in connection.execute("SELECT key_hash FROM api_keys")] == [sha256(key)]


def test_init_database_dev_on_postgres_url(postgres, script_env):
    url = postgres.create()
    assert url.startswith("postgres://")
    env = dict(script_env, DATABASE_URL=url)
    result = run([INIT_DATABASE, "--env", "dev", "--user", "admin@gaia.dev"], env)
    assert result.returncode == 0, describe(result)
    key = key_from(result.stdout, "dev")
    assert "Traceback" not in result.stderr

    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://", 1)) as connection:
        personas = [row[0] for row in connection.execute("SELECT name FROM personas")]
        hashes = [row[0] for row in connection.execute("SELECT key_hash FROM api_keys")]
        users = connection.execute("SELECT email, is_admin FROM users").fetchall()
    assert personas == ["Mu"]
    assert hashes == [sha256(key)]
    assert users == [("admin@gaia.dev", True)]


@pytest.mark.parametrize("environment", ["dev", "staging", "prod"])
def test_init_database_remote_env_needs_database_url(script_env, environment):
    result = run([INIT_DATABASE, "--env", environment, "--user", "x@y.z"], script_env)
    assert result.returncode == 2, describe(result)
    assert "DATABASE_URL" in result.stderr
    assert f"gaia-db-{environment}" in result.stderr
    assert "API key" not in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--env", "local"],
        ["--user", "x@y.z"],
        ["--env", "", "--user", "x@y.z"],
        ["--bogus"],
        ["--help"],
    ],
    ids=["no-args", "no-user", "no-env", "empty-env", "unknown-arg", "help"],
)
def test_init_database_usage(script_env, args):
    result = run([INIT_DATABASE, *args], script_env)
    assert result.returncode == 2, describe(result)
    assert "usage:" in result.stderr and "--env local|dev|staging|prod --user EMAIL" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args", [["--user", "x@y.z", "--env"], ["--env", "local", "--user"]])
def test_init_database_option_without_value_is_a_usage_error(script_env, args):
    result = run([INIT_DATABASE, *args], script_env)
    assert result.returncode == 2, describe(result)
    assert "usage:" in result.stderr


@pytest.mark.parametrize("environment", ["qa", "production", "LOCAL"])
def test_init_database_unknown_env(tmp_path, script_env, environment):
    env = dict(script_env, DATABASE_URL=f"sqlite:///{tmp_path / 'gaia.db'}")
    result = run([INIT_DATABASE, "--env", environment, "--user", "x@y.z"], env)
    assert result.returncode == 2, describe(result)
    assert "--env must be local, dev, staging or prod" in result.stderr
    assert not (tmp_path / "gaia.db").exists()


# --------------------------------------------------------------------------- flask entry point


def test_flask_with_a_bad_service_name_says_configuration_error(tmp_path, script_env):
    env = dict(script_env, SERVICE_NAME="bogus", DATABASE_URL=f"sqlite:///{tmp_path / 'gaia.db'}")
    result = run([PROJECT_VENV / "bin" / "flask", "--app", "wsgi", "db", "upgrade"], env)
    assert result.returncode != 0, describe(result)
    assert "configuration error" in result.stderr
    assert "SERVICE_NAME='bogus'" in result.stderr
    for service in ("gateway", "auth", "chat", "asset"):
        assert service in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "gaia.db").exists()


def test_flask_with_an_unsupported_database_says_configuration_error(script_env):
    env = dict(script_env, DATABASE_URL="mysql://root@127.0.0.1:1/gaia")
    result = run([PROJECT_VENV / "bin" / "flask", "--app", "wsgi", "db", "upgrade"], env)
    assert result.returncode != 0, describe(result)
    assert "configuration error" in result.stderr and "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_on_a_database_without_schema_says_to_upgrade(tmp_path, script_env):
    env = dict(script_env, DATABASE_URL=f"sqlite:///{tmp_path / 'gaia.db'}")
    result = run([PROJECT_VENV / "bin" / "flask", "--app", "wsgi", "create-admin", "--email", "a@b.cd"], env)
    assert result.returncode != 0, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    assert "db upgrade" in result.stderr, describe(result)
