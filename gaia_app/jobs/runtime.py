"""`AssetRuntime`: the asset service's process-wide pieces, built on first use."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from gaia_app.errors import Unavailable
from gaia_app.jobs.settings import AssetSettings

if TYPE_CHECKING:
    from flask import Flask

    from gaia_app.generators.base import Generator
    from gaia_app.jobs.dispatch import Dispatcher
    from gaia_app.jobs.events import EventPublisher
    from gaia_app.storage.base import AssetStorage


class AssetRuntime:
    def __init__(self, app: Flask, settings: AssetSettings, *, redis_url: str | None) -> None:
        self.app = app
        self.settings = settings
        self.redis_url = redis_url
        self._lock = threading.Lock()
        self._storage: AssetStorage | None = None
        self._generators: dict[str, Generator] = {}
        self._events: EventPublisher | None = None
        self._dispatcher: Dispatcher | None = None

    @property
    def runs_inline(self) -> bool:
        """Without Redis, jobs run in background threads of the web process itself."""
        return self.redis_url is None

    @property
    def storage(self) -> AssetStorage:
        if self._storage is None:
            from gaia_app.storage import storage_from_url

            with self._lock:
                if self._storage is None:
                    self._storage = storage_from_url(
                        self.settings.storage_url, instance_path=self.app.instance_path,
                        endpoint_url=self.settings.s3_endpoint_url,
                    )
        return self._storage

    def generator(self, generator_id: str) -> Generator:
        """A configured generator; `Unavailable` when this deployment has no such one."""
        found = self._generators.get(generator_id)
        if found is None:
            from gaia_app.generators.kinds import build

            configured = {g.id: g for g in self.settings.generators}
            if generator_id not in configured:
                raise Unavailable(f"The asset provider {generator_id!r} is not configured here.")
            with self._lock:
                found = self._generators.get(generator_id) or build(configured[generator_id])
                self._generators[generator_id] = found
        return found

    @property
    def events(self) -> EventPublisher:
        if self._events is None:
            from gaia_app.jobs.events import publisher_for

            with self._lock:
                if self._events is None:
                    self._events = publisher_for(self.settings.nats_url)
        return self._events

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is None:
            from gaia_app.jobs.dispatch import CeleryDispatcher, InlineDispatcher

            with self._lock:
                if self._dispatcher is None:
                    kind = InlineDispatcher if self.runs_inline else CeleryDispatcher
                    self._dispatcher = kind(self.app, self.settings)
        return self._dispatcher

    def use(self, *, events: EventPublisher | None = None, generators: dict[str, Generator] | None = None) -> None:
        """Put pieces in place of the configured ones (an embedding app's own, or a test's)."""
        if events is not None:
            self._events = events
        self._generators.update(generators or {})

    def start_background(self) -> None:
        """Without Redis, start this process's runner and sweeper (with Redis, workers run jobs)."""
        if self.runs_inline:
            _ = self.dispatcher

    def dispatch(self, job_id, *, delay: float = 0.0) -> None:
        """Send a committed job to a runner (call only after the commit that made it)."""
        self.dispatcher.dispatch(str(job_id), delay=delay)

    def close(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.close()
        if self._events is not None:
            self._events.close()
