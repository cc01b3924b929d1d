from pathlib import Path

import pytest

from gaia_app import create_app
from gaia_app.config import ConfigError, load_settings, normalize_database_url, parse_services
from gaia_app.state import gaia

ROOT = Path(__file__).resolve().parent.parent


def settings(tmp_path, **env):
    return load_settings(env, tmp_path, ROOT)


def test_service_name_defaults_to_all_and_accepts_lists():
    assert parse_services("all") == ("gateway", "auth", "chat", "asset")
    assert parse_services("") == ("gateway", "auth", "chat", "asset")
    assert parse_services("chat, auth") == ("auth", "chat")
    assert parse_services("CHAT") == ("chat",)


def test_unknown_service_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as caught:
        parse_services("chat,billing")
    message = str(caught.value)
    assert "billing" in message
    for name in ("all", "gateway", "auth", "chat", "asset"):
        assert name in message


@pytest.mark.parametrize(
    "given, expected",
    [
        ("postgres://u:p@db.internal:5432/postgres", "postgresql+psycopg://u:p@db.internal:5432/postgres"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_database_url_is_normalised_for_sqlalchemy(given, expected):
    assert normalize_database_url(given) == expected


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path):
    assert settings(tmp_path).database_url == f"sqlite:///{tmp_path / 'gaia.db'}"


def test_unsupported_or_garbage_database_url_is_refused_without_leaking_the_password(tmp_path):
    with pytest.raises(ConfigError) as caught:
        settings(tmp_path, DATABASE_URL="mysql://root:hunter2@h/db")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError):
        settings(tmp_path, DATABASE_URL="not a url")


def test_secret_key_is_generated_and_kept_locally(tmp_path):
    first = settings(tmp_path).secret_key
    assert len(first) >= 32
    assert settings(tmp_path).secret_key == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_secret_key_is_required_and_long_outside_local(tmp_path):
    with pytest.raises(ConfigError, match="GAIA_SECRET_KEY is required"):
        settings(tmp_path, ENVIRONMENT="dev")
    with pytest.raises(ConfigError, match="at least 32"):
        settings(tmp_path, ENVIRONMENT="prod", GAIA_SECRET_KEY="short")
    assert settings(tmp_path, ENVIRONMENT="prod", GAIA_SECRET_KEY="x" * 32).environment == "prod"


@pytest.mark.parametrize(
    "env, match",
    [
        ({"ENVIRONMENT": "qa"}, "ENVIRONMENT"),
        ({"RATE_LIMIT_DEFAULT": "lots"}, "RATE_LIMIT_DEFAULT"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"AUTH_CACHE_TTL": "soon"}, "AUTH_CACHE_TTL"),
        ({"GAIA_DISABLE_LOCAL_PROVIDER": "maybe"}, "GAIA_DISABLE_LOCAL_PROVIDER"),
    ],
)
def test_bad_settings_are_named(tmp_path, env, match):
    with pytest.raises(ConfigError, match=match):
        settings(tmp_path, **env)


def test_build_id_prefers_the_variable(tmp_path):
    assert settings(tmp_path, GAIA_BUILD_ID="abc123").build_id == "abc123"
    assert settings(tmp_path).build_id.startswith("0.")


def test_settings_are_read_when_the_factory_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("GAIA_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("SERVICE_NAME", "chat")
    assert gaia(create_app()).settings.services == ("chat",)
    monkeypatch.setenv("SERVICE_NAME", "auth,gateway")
    assert gaia(create_app()).settings.services == ("gateway", "auth")
