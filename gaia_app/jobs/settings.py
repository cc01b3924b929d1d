"""The asset service's settings: storage, generators, events and how jobs run.

Read once by `config.load_settings` (kept at `settings.assets`); nothing else reads the
environment for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gaia_app.environment import ConfigError, number
from gaia_app.generators.base import GeneratorSettings
from gaia_app.generators.kinds import KINDS, configured_settings


@dataclass(frozen=True)
class AssetSettings:
    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    generators: tuple[GeneratorSettings, ...] = ()
    default_generator: str = "builtin"
    nats_url: str | None = None
    # A worker holds a job for this long without a sign of life before another may take it.
    lease_seconds: float = 60.0
    max_attempts: int = 3
    # A transient failure waits retry_base_delay * 2^(attempt-1) seconds, at most retry_max_delay.
    retry_base_delay: float = 2.0
    retry_max_delay: float = 60.0
    # How often the sweeper looks for jobs whose worker died, or whose message was lost.
    sweep_interval: float = 10.0
    # A queued job not claimed for this long is sent again (the broker may have lost it).
    redispatch_after: float = 120.0
    max_description_chars: int = 4000
    # Without REDIS_URL, jobs run in this many background threads of the web process.
    inline_workers: int = 2

    @property
    def generator_ids(self) -> tuple[str, ...]:
        return tuple(generator.id for generator in self.generators)


def load_asset_settings(env: Mapping[str, str]) -> AssetSettings:
    generators = tuple(configured_settings(env))
    ids = [generator.id for generator in generators]
    default = env.get("ASSET_DEFAULT_PROVIDER", "").strip() or (ids[0] if ids else "builtin")
    if default not in KINDS:
        raise ConfigError(f"ASSET_DEFAULT_PROVIDER={default!r} is not one of: {', '.join(KINDS)}")
    if default not in ids:
        raise ConfigError(f"ASSET_DEFAULT_PROVIDER={default!r} is not configured (set its API key)")
    storage_url = env.get("ASSET_STORAGE_URL", "").strip() or None
    if storage_url and not storage_url.startswith(("file://", "s3://", "/")):
        raise ConfigError("ASSET_STORAGE_URL must be file:///path, /path or s3://bucket[/prefix]")
    nats_url = env.get("NATS_URL", "").strip() or None
    if nats_url and not nats_url.startswith(("nats://", "tls://")):
        raise ConfigError("NATS_URL must start with nats:// or tls://")
    return AssetSettings(
        storage_url=storage_url,
        s3_endpoint_url=env.get("S3_ENDPOINT_URL", "").strip() or None,
        generators=generators,
        default_generator=default,
        nats_url=nats_url,
        lease_seconds=number(env, "ASSET_JOB_LEASE_SECONDS", 60.0, minimum=0.1),
        max_attempts=int(number(env, "ASSET_JOB_MAX_ATTEMPTS", 3, minimum=1)),
        retry_base_delay=number(env, "ASSET_JOB_RETRY_DELAY", 2.0, minimum=0.0),
        retry_max_delay=number(env, "ASSET_JOB_RETRY_MAX_DELAY", 60.0, minimum=0.0),
        sweep_interval=number(env, "ASSET_JOB_SWEEP_INTERVAL", 10.0, minimum=0.05),
        redispatch_after=number(env, "ASSET_JOB_REDISPATCH_AFTER", 120.0, minimum=0.1),
        max_description_chars=int(number(env, "ASSET_MAX_DESCRIPTION_CHARS", 4000, minimum=1)),
        inline_workers=int(number(env, "ASSET_INLINE_WORKERS", 2, minimum=1)),
    )
