"""A remote provider's model list and health, asked of it now and then, never per request.

The first listing is fetched while the caller waits (bounded by the model-list timeouts);
after that a stale list is served at once and refreshed in the background. Chat calls report
their outcome here too, so a provider that starts failing shows as degraded without a probe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gaia_app.providers.base import ModelInfo, ProviderError, ProviderHealth
from gaia_app.runtime.clock import Clock

log = logging.getLogger(__name__)

# After a failed fetch, ask again this soon rather than after the whole TTL.
FAILURE_TTL = 30.0
# How long a failed chat call keeps a provider "degraded".
DEGRADED_FOR = 60.0


class LiveModels:
    def __init__(
        self,
        provider_id: str,
        fetch: Callable[[], list[ModelInfo]] | None,
        declared: list[ModelInfo],
        ttl: float,
        on_change: Callable[[], None] = lambda: None,
        fallback: list[ModelInfo] = (),
        clock: Clock | None = None,
    ) -> None:
        self._clock = clock or Clock()
        self.provider_id = provider_id
        self._fetch = fetch
        self._declared = declared
        self._ttl = ttl
        self._on_change = on_change
        # Listed until a live list arrives (and while none can be had): the operator's
        # declared models, else what is known of the provider's usual ones.
        initial = list(declared) or list(fallback)
        self._models: list[ModelInfo] = initial
        self._by_id = {model.id: model for model in initial}
        self._fetched_at: float | None = None
        self._expires_at = 0.0
        self._health = ProviderHealth(status="available" if fetch is None else "unknown")
        self._last_failure_at = 0.0
        self._last_failure: str | None = None
        self._lock = threading.Lock()
        self._refreshing = False

    # -- reading -------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        self._maybe_refresh()
        return self._models

    def get(self, model_id: str) -> ModelInfo | None:
        self._maybe_refresh()
        return self._by_id.get(model_id)

    def health(self) -> ProviderHealth:
        self._maybe_refresh()
        health = self._health
        if self._clock.monotonic() - self._last_failure_at < DEGRADED_FOR and health.status == "available":
            return ProviderHealth(status="degraded", latency_ms=health.latency_ms, detail=self._last_failure)
        return health

    # -- chat outcomes -------------------------------------------------------------------

    def record_failure(self, error: ProviderError) -> None:
        self._last_failure_at = self._clock.monotonic()
        self._last_failure = error.message

    # -- refreshing ----------------------------------------------------------------------

    def _maybe_refresh(self) -> None:
        if self._fetch is None:
            return
        now = self._clock.monotonic()
        if self._fetched_at is None:
            with self._lock:
                if self._fetched_at is None:
                    self._refresh()
            return
        if now >= self._expires_at and not self._refreshing:
            with self._lock:
                if self._refreshing:
                    return
                self._refreshing = True
            threading.Thread(target=self._refresh_in_background, daemon=True,
                             name=f"gaia-models-{self.provider_id}").start()

    def _refresh_in_background(self) -> None:
        try:
            self._refresh()
        finally:
            self._refreshing = False

    def _refresh(self) -> None:
        started = time.monotonic()
        try:
            fetched = self._fetch()
        except ProviderError as error:
            self._fetched_at = self._clock.monotonic()
            self._expires_at = self._fetched_at + FAILURE_TTL
            self._health = ProviderHealth(status="unavailable", detail=error.message)
            log.warning("could not list the models of %s: %s", self.provider_id, error.message)
            return
        except Exception as error:  # a provider bug must not break listings
            self._fetched_at = self._clock.monotonic()
            self._expires_at = self._fetched_at + FAILURE_TTL
            self._health = ProviderHealth(status="unavailable", detail=f"model list failed: {error}")
            log.exception("listing the models of %s failed", self.provider_id)
            return
        latency = (time.monotonic() - started) * 1000
        # Declared models stay listed (with their metadata), even if the provider omits them.
        merged = {model.id: model for model in fetched}
        merged.update({model.id: model for model in self._declared})
        models = sorted(merged.values(), key=lambda m: m.id)
        changed = [m.id for m in models] != [m.id for m in self._models] or models != self._models
        self._models = models
        self._by_id = merged
        self._fetched_at = self._clock.monotonic()
        self._expires_at = self._fetched_at + self._ttl
        self._health = ProviderHealth(status="available", latency_ms=round(latency, 1))
        if changed:
            self._on_change()


class LiveCatalogue:
    """The catalogue side of a remote provider, served from its `self.live` (LiveModels)."""

    live: LiveModels

    def list_models(self) -> list[ModelInfo]:
        return self.live.models()

    def get_model(self, model_id: str) -> ModelInfo | None:
        return self.live.get(model_id)

    def health(self) -> ProviderHealth:
        return self.live.health()

    def record_failure(self, error: ProviderError) -> None:
        self.live.record_failure(error)
