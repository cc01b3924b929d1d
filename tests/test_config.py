import re
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
    monkeypatch.setenv("CHAT_SERVICE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ASSET_SERVICE_URL", "http://127.0.0.1:9")
    assert gaia(create_app()).settings.services == ("gateway", "auth")


# -- where a gateway finds the other services, and how long it waits for them --------------

ELSEWHERE = {"AUTH_SERVICE_URL": "http://auth:8080", "CHAT_SERVICE_URL": "http://chat:8080",
             "ASSET_SERVICE_URL": "http://asset:8080"}


@pytest.mark.parametrize(
    "given, expected",
    [
        ("http://gaia-chat.internal:8080", "http://gaia-chat.internal:8080"),
        ("http://gaia-chat.internal:8080/", "http://gaia-chat.internal:8080"),
        ("  HTTPS://chat.example.com  ", "https://chat.example.com"),
        ("http://[fdaa::3]:8080", "http://[fdaa::3]:8080"),
    ],
)
def test_a_service_url_is_its_origin(tmp_path, given, expected):
    env = {**ELSEWHERE, "SERVICE_NAME": "gateway", "CHAT_SERVICE_URL": given}
    assert settings(tmp_path, **env).service_urls["chat"] == expected


@pytest.mark.parametrize(
    "given, match",
    [
        ("localhost:8002",
         "CHAT_SERVICE_URL='localhost:8002' must be an http:// or https:// URL with a host"),
        ("ftp://chat:21", "must be an http:// or https:// URL"),
        ("http://", "must be an http:// or https:// URL with a host"),
        ("http:///api", "must be an http:// or https:// URL with a host"),
        ("http://chat :8080", "must be an http:// or https:// URL"),
        ("http://chat:80a", "CHAT_SERVICE_URL='http://chat:80a' has a bad port"),
        ("http://chat:70000", "has a bad port"),
        ("http://chat:0", "has a bad port"),
        ("http://chat:", "has a bad port"),
        ("http://chat:8080?x=1", "without a path, query or fragment"),
        ("http://chat:8080/#top", "without a path, query or fragment"),
        ("http://chat:8080/api/v0.2", "without a path, query or fragment"),
    ],
)
def test_a_malformed_service_url_is_named(tmp_path, given, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        settings(tmp_path, **{**ELSEWHERE, "SERVICE_NAME": "gateway", "CHAT_SERVICE_URL": given})


def test_a_service_url_with_credentials_is_refused_without_showing_them(tmp_path):
    with pytest.raises(ConfigError, match="must not hold credentials") as caught:
        settings(tmp_path, **{**ELSEWHERE, "ASSET_SERVICE_URL": "http://gaia:hunter2@asset:8080"})
    assert "hunter2" not in str(caught.value) and "ASSET_SERVICE_URL" in str(caught.value)


@pytest.mark.parametrize(
    "service_name, missing",
    [
        ("gateway", "AUTH_SERVICE_URL"),
        ("gateway,auth,chat", "ASSET_SERVICE_URL"),
        ("gateway,asset", "AUTH_SERVICE_URL"),
    ],
)
def test_a_missing_service_url_stops_a_gateway_that_needs_it(tmp_path, service_name, missing):
    env = {k: v for k, v in ELSEWHERE.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing} is not set: the gateway forwards /api/v0.2/"):
        settings(tmp_path, SERVICE_NAME=service_name, **env)


@pytest.mark.parametrize("service_name", ["all", "chat", "auth,asset", "gateway,auth,chat,asset"])
def test_service_urls_are_needed_only_for_what_a_gateway_forwards(tmp_path, service_name):
    assert settings(tmp_path, SERVICE_NAME=service_name).service_urls == {}


def test_gateway_timeouts_default_and_are_read(tmp_path):
    default = settings(tmp_path)
    assert (default.gateway_connect_timeout, default.gateway_read_timeout) == (3.0, 300.0)
    chosen = settings(tmp_path, GATEWAY_CONNECT_TIMEOUT="0.5", GATEWAY_READ_TIMEOUT="45")
    assert (chosen.gateway_connect_timeout, chosen.gateway_read_timeout) == (0.5, 45.0)


@pytest.mark.parametrize("variable", ["GATEWAY_CONNECT_TIMEOUT", "GATEWAY_READ_TIMEOUT"])
@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_bad_gateway_timeouts_are_named(tmp_path, variable, value):
    with pytest.raises(ConfigError, match=f"^{variable}="):
        settings(tmp_path, **{variable: value})


@pytest.mark.parametrize("variable", ["AUTH_CACHE_TTL", "LLM_READ_TIMEOUT", "ASSET_JOB_LEASE_SECONDS"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_no_number_setting_takes_nan_or_infinity(tmp_path, variable, value):
    with pytest.raises(ConfigError, match=f"^{variable}="):
        settings(tmp_path, **{variable: value})
