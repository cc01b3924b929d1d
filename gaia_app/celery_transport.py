"""kombu's Redis transport, with one Redis client per channel for publishing.

kombu makes a new `redis.Redis` object for every message it puts on a queue (its
`conn_or_acquire`); building one (redis-py sets up its response callbacks each time) was a
third of what sending a job cost the web process (bench/README.md, "Assets"). The client
shares the channel's connection pool either way, so one client per channel changes nothing
but the cost.
"""

from __future__ import annotations

from contextlib import contextmanager

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _publishing_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        if self._publishing_client is None:
            self._publishing_client = self._create_client()
        yield self._publishing_client


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
