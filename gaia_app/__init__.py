"""Gaia: one Flask app factory for the gateway, auth, chat and asset services."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask.sessions import SessionInterface

__version__ = "0.2.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
API_PREFIX = "/api/v0.2"


@dataclass
class GaiaState:
    """Per-app shared objects, kept at `app.extensions["gaia"]`."""

    settings: Any
    authenticator: Any
    providers: Any
    migrations: Any
    api: Any
    usage: Any = None
    # Serialized listings that change only with configuration (see blueprints.chat.catalog).
    listing_cache: dict = field(default_factory=dict)


def instance_path_from(env: Mapping[str, str]) -> Path:
    """Where SQLite, the local secret and local files live."""
    return Path(env.get("GAIA_INSTANCE_PATH") or PROJECT_ROOT / "instance").resolve()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. `config` overrides environment variables (same names) and Flask config.

    Raises `gaia_app.config.ConfigError` with an operator-readable message on bad settings.
    """
    from gaia_app.config import load_settings

    overrides = dict(config or {})
    env = dict(os.environ)
    env.update({k: str(v) for k, v in overrides.items() if isinstance(v, (str, int, float))})

    instance_path = instance_path_from(env)
    app = Flask(__name__, instance_path=str(instance_path))
    settings = load_settings(env, instance_path, PROJECT_ROOT)

    _configure_flask(app, settings, overrides)
    _init_logging(app)
    _init_database(app, settings)
    api = _init_api(app)
    _init_state(app, settings, api)
    _register_services(app, api, settings)
    _init_security(app, settings)
    _init_errors_and_cli(app)
    return app


class NoCookieSessions(SessionInterface):
    def open_session(self, app, request):
        return None

    def save_session(self, app, session, response):
        return None


def _init_security(app: Flask, settings) -> None:
    from flask_cors import CORS
    from werkzeug.middleware.proxy_fix import ProxyFix

    from gaia_app.invalidation import install_session_hooks
    from gaia_app.security import add_rate_limit_headers

    install_session_hooks()
    # A token API has no cookie sessions: skip Flask's per-request session signer and
    # cookie lookup (and with it any CSRF surface).
    app.session_interface = NoCookieSessions()
    app.after_request(add_rate_limit_headers)
    if settings.trusted_proxy_count:
        # Behind Fly's proxy (or another), the client address is the one it appended.
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=settings.trusted_proxy_count, x_proto=settings.trusted_proxy_count
        )
    if settings.allowed_origins:
        CORS(
            app,
            origins=list(settings.allowed_origins),
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
            expose_headers=[
                "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After",
            ],
            max_age=600,
        )


def _configure_flask(app: Flask, settings, overrides: Mapping[str, Any]) -> None:
    # Plain Flask keys (TESTING, ...) from `config`; what Settings derives always wins.
    app.config.update({k: v for k, v in overrides.items() if k.isupper()})
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(settings),
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


def _engine_options(settings) -> dict:
    if settings.is_sqlite:
        return {"connect_args": {"timeout": 15}}
    return {
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        # A gevent worker serves many requests at once: connections beyond the pool's size
        # are closed when given back, so a small pool means reconnecting under load.
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "connect_args": {"connect_timeout": settings.database_connect_timeout},
    }


def _init_logging(app: Flask) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=os.environ.get("LOG_LEVEL", "INFO").upper(),
            format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _init_database(app: Flask, settings) -> None:
    from gaia_app.extensions import db, migrate
    from gaia_app import models  # noqa: F401  (registers the tables on the metadata)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True, compare_type=True)
    if settings.is_sqlite:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        with app.app_context():
            _tune_sqlite(db.engine)
    else:
        with app.app_context():
            _ping_only_idle_connections(db.engine)


# A pooled connection given back less than this long ago is not pinged again on checkout.
PING_AFTER_IDLE = 1.0


def _ping_only_idle_connections(engine) -> None:
    """`pool_pre_ping` costs a round trip on every checkout; skip it for a connection that was
    in use a moment ago. A database restart within that moment fails one request, after
    which SQLAlchemy replaces the whole pool."""
    import time
    import weakref

    from sqlalchemy import event

    given_back: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    ping = engine.dialect.do_ping

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection, _record):
        if dbapi_connection is not None:
            given_back[dbapi_connection] = time.monotonic()

    def ping_if_idle(dbapi_connection) -> bool:
        since = given_back.get(dbapi_connection)
        if since is not None and time.monotonic() - since < PING_AFTER_IDLE:
            return True
        return ping(dbapi_connection)

    engine.dialect.do_ping = ping_if_idle


def _tune_sqlite(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        # WAL lets gunicorn workers read while one writes; foreign keys make cascades real.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _init_api(app: Flask):
    from flask_smorest import Api
    from flask_swagger_ui import get_swaggerui_blueprint

    from gaia_app.schemas import ProblemSchema
    from gaia_app.security import register_security_schemes

    api = Api(app)
    api.spec.components.schema("Problem", schema=ProblemSchema)
    register_security_schemes(api.spec)
    app.register_blueprint(
        get_swaggerui_blueprint("/docs", f"{API_PREFIX}/openapi.json", config={"app_name": "Gaia API"})
    )
    return api


def _init_state(app: Flask, settings, api) -> None:
    from gaia_app.health import MigrationInfo
    from gaia_app.providers import build_registry
    from gaia_app.security import Authenticator
    from gaia_app.usage import UsageRecorder

    app.extensions["gaia"] = GaiaState(
        settings=settings,
        authenticator=Authenticator(app, settings),
        providers=build_registry(settings),
        migrations=MigrationInfo(MIGRATIONS_DIR),
        api=api,
        usage=UsageRecorder(app, settings.llm.usage_flush_interval),
    )


def _register_services(app: Flask, api, settings) -> None:
    from gaia_app.health import blp as health_blp

    api.register_blueprint(health_blp)
    for name in settings.services:
        module = importlib.import_module(f"blueprints.{name}")
        module.register(app, api)


def _init_errors_and_cli(app: Flask) -> None:
    from gaia_app.cli import register_cli
    from gaia_app.errors import register_error_handlers

    register_error_handlers(app)
    register_cli(app)
