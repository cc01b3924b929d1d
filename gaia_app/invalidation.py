"""Telling every process that a credential changed, so cached checks never outlive it.

With REDIS_URL, a change (key revoked or rotated, user deactivated, demoted or deleted) is
published on a Redis channel after its transaction commits; each process listens in a
background thread and drops the matching cache entries within milliseconds. While a process
is not connected to that channel it drops its whole cache and trusts entries for at most one
second, so a lost message can never keep a revoked key alive for long.

Without Redis there is no channel: entries live for AUTH_CACHE_TTL (1 s by default), which
bounds how long any process can act on a stale answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from flask import current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger("gaia.invalidation")

_SESSION_KEY = "gaia_invalidations"
DISCONNECTED_TTL = 1.0


def queue_key_invalidation(session, key_hash: str) -> None:
    session.info.setdefault(_SESSION_KEY, []).append(f"key:{key_hash}")


def queue_user_invalidation(session, user_id: uuid.UUID) -> None:
    session.info.setdefault(_SESSION_KEY, []).append(f"user:{user_id}")


def queue_invalidation(session, kind: str, value: str) -> None:
    """Another cache's change (one registered with `InvalidationBus.register`), sent after commit."""
    session.info.setdefault(_SESSION_KEY, []).append(f"{kind}:{value}")


class InvalidationBus:
    def __init__(self, settings, cache) -> None:
        self.redis_url = settings.redis_url
        self.channel = f"gaia:{settings.environment}:auth-invalidations"
        self.cache = cache
        self.connected = False
        self._listener_pid: int | None = None
        self._lock = threading.Lock()
        self._publisher = None
        # Other caches kept fresh by this channel: kind -> (apply(value), reset()).
        self._handlers: dict[str, tuple] = {}

    def register(self, kind: str, apply, reset) -> None:
        """Route messages "<kind>:<value>" to `apply(value)`; `reset()` when messages may
        have been missed (not connected), like the credential cache itself."""
        self._handlers[kind] = (apply, reset)

    def _reset(self) -> None:
        self.cache.clear()
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
        if kind in self._handlers:
            self._handlers[kind][0](value)
        elif kind == "key":
            self.cache.drop(value)
        elif kind == "user":
            try:
                self.cache.drop_user(uuid.UUID(value))
            except ValueError:
                self.cache.clear()
        else:
            self.cache.clear()

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
    try:
        bus = current_app.extensions["gaia"].authenticator.bus
    except (RuntimeError, KeyError, AttributeError):
        return
    bus.publish(messages)


def _forget_after_rollback(session) -> None:
    session.info.pop(_SESSION_KEY, None)


def install_session_hooks() -> None:
    if not event.contains(Session, "after_commit", _publish_after_commit):
        event.listen(Session, "after_commit", _publish_after_commit)
        event.listen(Session, "after_rollback", _forget_after_rollback)
