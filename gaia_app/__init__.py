"""Gaia: one Flask app factory for the gateway, auth, chat and asset services.

`create_app` reads the settings, then calls one small named step per concern, in order:
Flask config, logging, database, the OpenAPI `Api`, the shared runtime state, the services
`SERVICE_NAME` names, security (CORS, proxies, rate-limit headers), errors and the CLI.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from flask.sessions import SessionInterface

from gaia_app.constants import API_PREFIX, MIGRATIONS_DIR, PROJECT_ROOT, __version__
from gaia_app.runtime.clock import Clock

__all__ = ["API_PREFIX", "PROJECT_ROOT", "__version__", "create_app", "instance_path_from"]


def instance_path_from(env: Mapping[str, str]) -> Path:
    """Where SQLite, the local secret and local files live."""
    return Path(env.get("GAIA_INSTANCE_PATH") or PROJECT_ROOT / "instance").resolve()


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> Flask:
    """Build the app.

    Settings are read from `environ` when given (the complete environment: nothing else is
    read), else from `os.environ`; `config` overrides both (same names, plus Flask config
    keys). `clock` replaces the real one (tests move time by hand).

    Raises `gaia_app.environment.ConfigError` with an operator-readable message on bad settings.
    """
    from gaia_app.config import load_settings

    overrides = dict(config or {})
    env = dict(os.environ if environ is None else environ)
    env.update({k: str(v) for k, v in overrides.items() if isinstance(v, (str, int, float))})

    instance_path = instance_path_from(env)
    app = Flask(__name__, instance_path=str(instance_path))
    settings = load_settings(env, instance_path, PROJECT_ROOT)

    clock = clock or Clock()
    _configure_flask(app, settings, overrides)
    _init_logging(app, env)
    _init_database(app, settings, clock)
    api = _init_api(app)
    _init_state(app, settings, api, clock)
    _register_services(app, api, settings)
    _init_security(app, settings)
    _init_errors_and_cli(app)
    _init_celery(app, settings)
    return app


def _init_celery(app: Flask, settings) -> None:
    """With Redis, asset jobs go through Celery: set it up here, the documented Flask way.
    (Without Redis they run in this process, and Celery is never loaded.)"""
    if settings.redis_url and "asset" in settings.services:
        from gaia_app.celery_app import celery_init_app

        celery_init_app(app)


class NoCookieSessions(SessionInterface):
    """A token API has no cookie sessions: this skips Flask's per-request session signer and
    cookie lookup (and with them any CSRF surface)."""

    def open_session(self, app, request):
        return None

    def save_session(self, app, session, response):
        return None


def _configure_flask(app: Flask, settings, overrides: Mapping[str, Any]) -> None:
    from gaia_app.database import engine_options

    # Plain Flask keys (TESTING, ...) from `config`; what Settings derives always wins.
    app.config.update({k: v for k, v in overrides.items() if k.isupper()})
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings),
        JSON_SORT_KEYS=False,
        API_TITLE="Gaia",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX=API_PREFIX,
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "info": {
                "description": "Chat with LLM personas, AI asset generation and accounts "
                "for interactive apps.",
            }
        },
    )
    app.json.sort_keys = False


def _init_logging(app: Flask, env: Mapping[str, str]) -> None:
    """Log lines (JSON when deployed) and the request id every line and response carries."""
    from gaia_app.logs import configure_logging
    from gaia_app.request_ids import RequestIds

    configure_logging(env, env.get("SERVICE_NAME", "").strip().lower() or "all")
    app.wsgi_app = RequestIds(app.wsgi_app)


def _init_database(app: Flask, settings, clock: Clock) -> None:
    from gaia_app.database import init_database

    init_database(app, settings, clock)


def _init_api(app: Flask):
    from flask_smorest import Api
    from flask_swagger_ui import get_swaggerui_blueprint

    from gaia_app.blueprint import WireDocumentation
    from gaia_app.identity.decorator import register_security_schemes
    from gaia_app.schemas import OpenAIErrorSchema, ProblemSchema

    api = Api(app)
    api.spec.components.schema("Problem", schema=ProblemSchema)
    api.spec.components.schema("OpenAIError", schema=OpenAIErrorSchema)
    wire = WireDocumentation()
    wire.init_spec(api.spec)
    api.spec.plugins.append(wire)
    register_security_schemes(api.spec)
    app.register_blueprint(
        get_swaggerui_blueprint("/docs", f"{API_PREFIX}/openapi.json", config={"app_name": "Gaia API"})
    )
    return api


def _init_state(app: Flask, settings, api, clock: Clock) -> None:
    from gaia_app.database import MigrationInfo
    from gaia_app.identity.authenticator import Authenticator
    from gaia_app.jobs.runtime import AssetRuntime
    from gaia_app.providers import build_registry
    from gaia_app.runtime.invalidation import InvalidationBus
    from gaia_app.runtime.last_used import LastUsedRecorder
    from gaia_app.runtime.ratelimit import RateLimiter
    from gaia_app.runtime.usage import UsageRecorder
    from gaia_app.state import EXTENSION_KEY, GaiaState

    bus = InvalidationBus(settings)
    last_used = LastUsedRecorder(app, settings.last_used_flush_interval)
    app.extensions[EXTENSION_KEY] = GaiaState(
        settings=settings,
        clock=clock,
        bus=bus,
        rate_limiter=RateLimiter(settings),
        last_used=last_used,
        usage=UsageRecorder(app, settings.llm.usage_flush_interval),
        authenticator=Authenticator(settings, clock=clock, bus=bus, last_used=last_used),
        providers=build_registry(settings.llm, clock),
        migrations=MigrationInfo(MIGRATIONS_DIR),
        api=api,
        assets=AssetRuntime(app, settings.assets, redis_url=settings.redis_url),
    )


def _register_services(app: Flask, api, settings) -> None:
    from gaia_app.health import blp as health_blp

    api.register_blueprint(health_blp)
    for name in settings.services:
        module = importlib.import_module(f"blueprints.{name}")
        module.register(app, api)


def _init_security(app: Flask, settings) -> None:
    from gaia_app.identity.decorator import add_rate_limit_headers
    from gaia_app.runtime.invalidation import install_session_hooks

    install_session_hooks()
    app.session_interface = NoCookieSessions()
    app.after_request(add_rate_limit_headers)
    app.after_request(_no_content_no_type)
    if settings.trusted_proxy_count:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind Fly's proxy (or another), the client address is the one it appended.
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=settings.trusted_proxy_count, x_proto=settings.trusted_proxy_count
        )
    if settings.allowed_origins:
        from flask_cors import CORS

        CORS(
            app,
            origins=list(settings.allowed_origins),
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=[
                "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After",
                "X-Request-ID",
            ],
            max_age=600,
        )


def _no_content_no_type(response):
    """A 204 has no body, so it names no content type (flask-smorest sets JSON's)."""
    if response.status_code == 204:
        response.headers.pop("Content-Type", None)
    return response


def _init_errors_and_cli(app: Flask) -> None:
    from gaia_app.cli import register_cli
    from gaia_app.errors import register_error_handlers

    register_error_handlers(app)
    register_cli(app)
