"""Telling every process that something cached changed, so no cache outlives the change.

Caches register a message kind with the bus (the credential cache: "key" and "user"; chat's
persona cache: "personas"). A service queues "<kind>:<value>" on the SQLAlchemy session; after
the transaction commits, the bus applies it in this process and, with REDIS_URL, publishes it
on a Redis channel. Each process listens in a background thread and applies what it hears
within milliseconds. While a process is not connected to that channel it resets every
registered cache and trusts entries for at most one second, so a lost message can never keep
a revoked key alive for long.

Without Redis there is no channel: entries live for AUTH_CACHE_TTL (1 s by default), which
bounds how long any process can act on a stale answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from flask import has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from gaia_app.state import gaia

log = logging.getLogger("gaia.invalidation")

_SESSION_KEY = "gaia_invalidations"
DISCONNECTED_TTL = 1.0


def queue_invalidation(session, kind: str, value: str | uuid.UUID) -> None:
    """A change for the caches registered under `kind`, sent once `session` commits."""
    session.info.setdefault(_SESSION_KEY, []).append(f"{kind}:{value}")


class InvalidationBus:
    def __init__(self, settings) -> None:
        self.redis_url = settings.redis_url
        self.channel = f"gaia:{settings.environment}:auth-invalidations"
        self.connected = False
        self._listener_pid: int | None = None
        self._lock = threading.Lock()
        self._publisher = None
        # The caches kept fresh by this channel: kind -> (apply(value), reset()).
        self._handlers: dict[str, tuple] = {}

    def register(self, kind: str, apply, reset) -> None:
        """Route messages "<kind>:<value>" to `apply(value)`; `reset()` when messages may
        have been missed (not connected)."""
        self._handlers[kind] = (apply, reset)

    def _reset(self) -> None:
        for _apply, reset in self._handlers.values():
            reset()

    def ttl(self, configured: float) -> float:
        """How long a positive cache entry may be trusted right now."""
        if self.redis_url and not self.connected:
            return min(configured, DISCONNECTED_TTL)
        return configured

    def ensure_listening(self) -> None:
        if self.redis_url and self._listener_pid != os.getpid():
            with self._lock:
                if self._listener_pid != os.getpid():
                    self._listener_pid = os.getpid()
                    self.connected = False
                    self._publisher = None
                    threading.Thread(target=self._listen, name="gaia-invalidations", daemon=True).start()

    def apply(self, message: str) -> None:
        kind, _, value = message.partition(":")
        handler = self._handlers.get(kind)
        if handler is None:
            # A kind this process does not know (a newer build sent it): forget everything.
            self._reset()
            return
        handler[0](value)

    def publish(self, messages: list[str]) -> None:
        for message in messages:
            self.apply(message)
        if not self.redis_url or not messages:
            return
        try:
            self._publisher_client().publish(self.channel, "\n".join(messages))
        except Exception as exc:
            # Listeners that lost Redis too have already fallen back to a 1 s TTL.
            log.warning("could not publish credential changes: %s", exc)

    def _publisher_client(self):
        import redis

        if self._publisher is None:
            self._publisher = redis.Redis.from_url(
                self.redis_url, socket_timeout=1, socket_connect_timeout=1
            )
        return self._publisher

    def _listen(self) -> None:
        import redis

        while True:
            try:
                client = redis.Redis.from_url(
                    self.redis_url, socket_connect_timeout=2, health_check_interval=5
                )
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                # Whatever changed while we were not listening is unknown: start afresh.
                self._reset()
                self.connected = True
                log.info("listening for credential changes on %s", self.channel)
                while True:
                    message = pubsub.get_message(timeout=5)
                    if message and message.get("type") == "message":
                        data = message["data"].decode() if isinstance(message["data"], bytes) else message["data"]
                        for line in data.splitlines():
                            self.apply(line)
            except Exception as exc:
                if self.connected:
                    log.warning("lost the credential-change channel: %s", exc)
                self.connected = False
                self._reset()
                time.sleep(1)


def _publish_after_commit(session) -> None:
    messages = session.info.pop(_SESSION_KEY, None)
    if not messages:
        return
    if has_app_context():
        gaia().bus.publish(messages)


def _forget_after_rollback(session) -> None:
    session.info.pop(_SESSION_KEY, None)


def install_session_hooks() -> None:
    if not event.contains(Session, "after_commit", _publish_after_commit):
        event.listen(Session, "after_commit", _publish_after_commit)
        event.listen(Session, "after_rollback", _forget_after_rollback)
