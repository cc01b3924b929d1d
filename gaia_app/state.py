"""The per-app state: one typed object at `app.extensions["gaia"]`, built by `create_app`.

Views and services reach it through `gaia()` (or take the pieces they need as arguments);
nothing looks a shared object up by string anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import Flask, current_app

if TYPE_CHECKING:
    from flask_smorest import Api

    from gaia_app.config import Settings
    from gaia_app.database import MigrationInfo
    from gaia_app.identity.authenticator import Authenticator
    from gaia_app.jobs.runtime import AssetRuntime
    from gaia_app.providers import ProviderRegistry
    from gaia_app.runtime.clock import Clock
    from gaia_app.runtime.invalidation import InvalidationBus
    from gaia_app.runtime.last_used import LastUsedRecorder
    from gaia_app.runtime.ratelimit import RateLimiter
    from gaia_app.runtime.usage import UsageRecorder

EXTENSION_KEY = "gaia"


@dataclass
class GaiaState:
    settings: Settings
    clock: Clock
    bus: InvalidationBus
    rate_limiter: RateLimiter
    last_used: LastUsedRecorder
    usage: UsageRecorder
    authenticator: Authenticator
    providers: ProviderRegistry
    migrations: MigrationInfo
    api: Api
    assets: AssetRuntime
    # What a service keeps for itself (e.g. chat's persona cache), by service name.
    services: dict[str, object] = field(default_factory=dict)
    # Serialized listings that change only with configuration (see blueprints.chat.catalog).
    listing_cache: dict = field(default_factory=dict)


def gaia(app: Flask | None = None) -> GaiaState:
    """The state of `app`, or of the current app."""
    return (app or current_app).extensions[EXTENSION_KEY]
