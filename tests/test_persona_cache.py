"""The persona cache: a chat skips the persona query while it is fresh, and a persona change
reaches every process (through Redis) before it is used again."""

from __future__ import annotations

import pytest

from gaia_app.providers.common import count_tokens
from gaia_app.state import gaia
from tests.conftest import make_app, upgrade
from tests.test_invalidation import listening, wait_until

CHAT = "/api/v0.2/chat"
PERSONAS = "/api/v0.2/personas"


def _persona(client, headers, name, prompt):
    response = client.post(PERSONAS, json={"name": name, "system_prompt": prompt}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def test_a_fresh_cache_saves_the_persona_query(app, client, make, count_queries):
    headers = {"X-API-Key": make.key()}
    assert client.get("/api/v0.2/models", headers=headers).status_code == 200  # the key, cached
    gaia(app).services["chat.personas"].clear()
    with count_queries() as cold:
        assert client.post(CHAT, json={"message": "hello"}, headers=headers).status_code == 200
    with count_queries() as warm:
        assert client.post(CHAT, json={"message": "hello"}, headers=headers).status_code == 200
    # A new conversation: the persona, then the exchange; warm, the exchange alone.
    assert len(cold) - len(warm) == 1, (cold.statements, warm.statements)


def test_choosing_a_persona_is_seen_by_the_next_chat_at_once(app, client, make):
    headers = {"X-API-Key": make.key()}
    first = client.post(CHAT, json={"message": "hello"}, headers=headers).get_json()
    wizard = _persona(client, headers, "Wizard", "You are a wizard.")
    assert client.post(f"{PERSONAS}/set", json={"persona_id": wizard}, headers=headers).status_code == 200
    second = client.post(CHAT, json={"message": "hello"}, headers=headers).get_json()
    assert first["persona_id"] != wizard and second["persona_id"] == wizard
    # Editing the chosen persona changes what the next chat sends.
    before = second["usage"]["prompt_tokens"]
    longer = "You are a wizard " + "old " * 20
    response = client.put(f"{PERSONAS}/{wizard}", json={"system_prompt": longer}, headers=headers)
    assert response.status_code == 200
    third = client.post(CHAT, json={"message": "hello"}, headers=headers).get_json()
    assert third["usage"]["prompt_tokens"] == before + count_tokens(longer) - count_tokens("You are a wizard.")


@pytest.fixture
def two_processes(database_url, tmp_path_factory, _session_app, redis_url):
    apps = [make_app(database_url, tmp_path_factory, REDIS_URL=redis_url) for _ in range(2)]
    for each in apps:
        upgrade(each)
    return apps


def test_a_persona_chosen_in_one_process_is_used_by_another_at_once(two_processes, make):
    left, right = two_processes
    assert listening(left) and listening(right)
    headers = {"X-API-Key": make.key()}
    right_client = right.test_client()
    # Cached in the right process (60 s with Redis).
    mu = right_client.post(CHAT, json={"message": "hi"}, headers=headers).get_json()["persona_id"]
    left_client = left.test_client()
    wizard = _persona(left_client, headers, "Wizard", "You are a wizard.")
    assert left_client.post(f"{PERSONAS}/set", json={"persona_id": wizard}, headers=headers).status_code == 200
    seen = wait_until(
        lambda: right_client.post(CHAT, json={"message": "hi"}, headers=headers).get_json()["persona_id"] == wizard,
        timeout=1.0,
    )
    assert mu != wizard and seen is not None, "the other process kept the old persona"
