"""Validated credentials remembered in this process, by the SHA-256 of the credential.

Positive entries live `AUTH_CACHE_TTL` seconds, refusals `AUTH_NEGATIVE_CACHE_TTL`; the
invalidation bus drops entries the moment a key or a user changes ("key:<hash>",
"user:<id>"). Plain dict operations are atomic under the GIL, so readers take no lock.
"""

from __future__ import annotations

import uuid

from gaia_app.identity.principal import Principal, Refusal
from gaia_app.runtime.clock import Clock

CACHE_LIMIT = 50_000


class CredentialCache:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[float, Principal | Refusal]] = {}
        # Bumped by every invalidation: an answer loaded before one must not be cached after it.
        self.generation = 0

    def get(self, key: str) -> Principal | Refusal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < self._clock.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: str, value: Principal | Refusal, ttl: float, generation: int) -> None:
        """Cache `value`, loaded when the cache was at `generation`, unless it changed since."""
        if ttl <= 0 or generation != self.generation:
            return
        if len(self._entries) >= CACHE_LIMIT:
            self._evict()
        self._entries[key] = (self._clock.monotonic() + ttl, value)
        if generation != self.generation:
            # An invalidation landed between the check and the write (another thread).
            self._entries.pop(key, None)

    def _evict(self) -> None:
        now = self._clock.monotonic()
        for key, (deadline, _) in list(self._entries.items()):
            if deadline < now:
                self._entries.pop(key, None)
        if len(self._entries) >= CACHE_LIMIT:
            self._entries.clear()

    def drop(self, key: str) -> None:
        self.generation += 1
        self._entries.pop(key, None)

    def drop_user(self, user_id: uuid.UUID | str) -> None:
        self.generation += 1
        try:
            user_id = uuid.UUID(str(user_id))
        except ValueError:
            self._entries.clear()
            return
        for key, (_, value) in list(self._entries.items()):
            if value.user_id == user_id:
                self._entries.pop(key, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def listen_to(self, bus) -> None:
        """Keep this cache fresh through the invalidation bus."""
        bus.register("key", self.drop, self.clear)
        bus.register("user", self.drop_user, self.clear)

    def __len__(self) -> int:
        return len(self._entries)
