"""The Redis transport Gaia's Celery uses: messages arrive as with kombu's own, and a
channel publishes through one Redis client instead of building one per message."""

from __future__ import annotations

import base64
import json
import uuid

import redis
from celery import Celery

from gaia_app.celery_app import celery_settings
from gaia_app.celery_transport import TRANSPORT, Channel


def test_redis_urls_use_the_transport_and_tls_urls_keep_kombus():
    assert celery_settings("redis://127.0.0.1:6379/0")["broker_transport"] == TRANSPORT
    assert "broker_transport" not in celery_settings("rediss://cache.example:6380/0")
    assert "broker_transport" not in celery_settings(None)


def test_tasks_sent_through_it_are_queued_and_share_one_client(redis_url):
    queue = f"gaia-transport-test-{uuid.uuid4().hex}"
    app = Celery("transport-test")
    app.config_from_object({**celery_settings(redis_url), "imports": ()})
    try:
        for number in range(20):
            app.send_task("gaia.test.nothing", args=[number], queue=queue)
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            assert isinstance(channel, Channel)
            with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
                assert first is second
        client = redis.Redis.from_url(redis_url)
        messages = [json.loads(raw) for raw in client.lrange(queue, 0, -1)]
        assert len(messages) == 20
        sent_args = sorted(json.loads(base64.b64decode(message["body"]))[0][0] for message in messages)
        assert sent_args == list(range(20))
    finally:
        redis.Redis.from_url(redis_url).delete(queue)
        app.close()
