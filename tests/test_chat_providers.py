"""Chat against remote providers: the adapters, the catalogue, fallback and streaming.

Everything runs against the loopback fakes of `tests.fakes.llm_servers` (127.0.0.1 only):
FakeOpenAI "A" is the `openai` provider (OPENAI_BASE_URL), FakeOpenAI "B" is `backup`,
declared in a GAIA_PROVIDERS_FILE, and FakeAnthropic is `anthropic` (ANTHROPIC_BASE_URL).
One migrated SQLite database serves the module; apps are cheap, so tests that need a fresh
registry (model lists fetched once, providers files) build their own on it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import select, text
from werkzeug.serving import make_server

from gaia_app import accounts
from gaia_app.config import ConfigError
from gaia_app.extensions import db
from gaia_app.providers.base import ProviderDeclaration
from gaia_app.providers.openai_compat import OPENAI_DEFAULT_BASE_URL
from gaia_app.models import DEFAULT_PERSONA_ID, Conversation, Message, Persona, UsageEvent
from gaia_app.providers.base import ChatMessage, ChatRequest
from gaia_app.providers.openai_compat import OpenAICompatibleProvider
from gaia_app.state import gaia
from tests.conftest import make_app, problem_of, upgrade
from tests.fakes.llm_servers import Behaviour, FakeAnthropic, FakeOpenAI

KEY_A = "sk-fake-openai"
KEY_B = "sk-backup-fake"
KEY_ANT = "sk-ant-fake"
READ_TIMEOUT = 1.0
# Short timeouts keep the failure tests fast; every app of this module gets them.
FAST = {
    "LLM_CONNECT_TIMEOUT": "1",
    "LLM_READ_TIMEOUT": str(READ_TIMEOUT),
    "CHAT_STREAM_KEEPALIVE": "0.2",
}


def wait_for(predicate, timeout=2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True




# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_proxy():
    """Provider sessions read proxy settings when the app is built: loopback goes direct."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("NO_PROXY", "no_proxy"):
            patch.setenv(name, "127.0.0.1,localhost")
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def refusing_port():
    """A loopback port held (bound, not listening) for the module: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def oai_a():
    with FakeOpenAI(models=("gpt-4o-mini", "gpt-4o", "only-a"), api_key=KEY_A) as server:
        yield server


@pytest.fixture(scope="module")
def oai_b():
    with FakeOpenAI(models=("gpt-4o-mini", "gpt-4o"), api_key=KEY_B) as server:
        yield server


@pytest.fixture(scope="module")
def ant():
    with FakeAnthropic(api_key=KEY_ANT) as server:
        yield server


@pytest.fixture(scope="module")
def db_url(tmp_path_factory, no_proxy):
    url = f"sqlite:///{tmp_path_factory.mktemp('chat-providers') / 'x.db'}"
    upgrade(make_app(url, tmp_path_factory))
    return url


@pytest.fixture(scope="module")
def build(db_url, tmp_path_factory, no_proxy):
    """An app on the module's database with `env` (plus the short timeouts)."""

    def build(clock=None, **env):
        app = make_app(db_url, tmp_path_factory, clock=clock, **{**FAST, **env})
        gaia(app).usage.background = False  # the tests flush
        return app

    return build


@pytest.fixture(scope="module")
def app(build, oai_a, oai_b, ant, refusing_port, tmp_path_factory):
    providers_file = tmp_path_factory.mktemp("providers") / "providers.json"
    providers_file.write_text(json.dumps({
        "providers": [
            {"id": "backup", "kind": "openai", "name": "Backup GPT",
             "base_url": oai_b.url + "/v1", "api_key_env": "BACKUP_LLM_KEY"},
            # Refuses connections; declares its model, since it cannot list it.
            {"id": "dead", "kind": "openai", "base_url": f"http://127.0.0.1:{refusing_port}/v1",
             "models": ["gpt-4o-mini"], "list_models": False},
        ],
        "fallbacks": {"openai/only-a": ["anthropic/claude-haiku-4-5"]},
    }))
    app = build(
        OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai_a.url + "/v1",
        ANTHROPIC_API_KEY=KEY_ANT, ANTHROPIC_BASE_URL=ant.url,
        GAIA_PROVIDERS_FILE=str(providers_file), BACKUP_LLM_KEY=KEY_B,
    )
    # Fetch every model list now, while all fakes are well (the lists are then cached).
    assert {m.provider for m in gaia(app).providers.models()} == {
        "openai", "anthropic", "backup", "dead", "local"}
    return app


@pytest.fixture(scope="module")
def key(app):
    with app.app_context():
        user = accounts.create_user(f"chat-{uuid.uuid4().hex[:8]}@example.com")
        _, plaintext = accounts.create_api_key(user, name="chat tests", environment="local")
        db.session.commit()
    return plaintext


@pytest.fixture(scope="module")
def auth(key):
    return {"X-API-Key": key}


@pytest.fixture(scope="module")
def mu_prompt(app):
    with app.app_context():
        return db.session.get(Persona, DEFAULT_PERSONA_ID).system_prompt


@pytest.fixture(autouse=True)
def _fresh(request):
    """Fakes well again, no Retry-After pauses, no usage left over from another test."""
    yield
    for name in ("oai_a", "oai_b", "ant"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
    if "app" in request.fixturenames:
        app = request.getfixturevalue("app")
        gaia(app).providers.clear_cooldowns()
        gaia(app).usage.discard_pending()
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(text("DELETE FROM usage_events"))


@pytest.fixture
def client(app):
    return app.test_client()


# -- helpers ------------------------------------------------------------------------------


def chat(client, auth, **body):
    body.setdefault("message", "hi there")
    return client.post("/api/v0.2/chat", json=body, headers=auth)


def chat_calls(fake) -> list[dict]:
    """The chat requests a fake received (model listings left out)."""
    return [r for r in fake.requests if r["method"] == "POST"]


def model_listings(fake) -> int:
    return sum(1 for r in fake.requests if r["method"] == "GET" and r["path"] == "/v1/models")


def sse_items(raw: bytes) -> list[tuple]:
    """("comment", text) and ("event", name, data) in the order they were sent."""
    items = []
    for block in raw.decode().split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if not line:
                continue
            if line.startswith(":"):
                items.append(("comment", line[1:].strip()))
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            items.append(("event", name, "\n".join(data)))
    return items


def chunks_of(items) -> list[dict]:
    """The chat.completion.chunk objects of a stream (not [DONE], not error events)."""
    return [json.loads(i[2]) for i in items if i[0] == "event" and i[1] is None and i[2] != "[DONE]"]


def content_of(items) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks_of(items) if c["choices"])


def error_events(items) -> list[dict]:
    return [json.loads(i[2]) for i in items if i[0] == "event" and i[1] == "error"]


def usage_rows(app) -> list[dict]:
    gaia(app).usage.flush()
    columns = ("kind", "provider", "model", "stream", "status", "error_type", "prompt_tokens",
               "completion_tokens", "conversation_id")
    with app.app_context():
        rows = db.session.execute(select(UsageEvent)).scalars().all()
        return [{c: getattr(row, c) for c in columns} for row in rows]


def stored(app, conversation_id) -> tuple[int, int]:
    """(conversations, messages) stored under this id."""
    conversation_id = uuid.UUID(str(conversation_id))
    with app.app_context():
        conversations = db.session.execute(
            select(Conversation).where(Conversation.id == conversation_id)).scalars().all()
        messages = db.session.execute(
            select(Message).where(Message.conversation_id == conversation_id)).scalars().all()
        return len(conversations), len(messages)


@contextmanager
def serving(app):
    """The app on a real threaded HTTP server on 127.0.0.1 (for client disconnects)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)


# -- the OpenAI adapter -------------------------------------------------------------------


def test_openai_non_stream_sends_persona_and_limits_and_reports_provider_usage(
        client, auth, oai_a, mu_prompt):
    response = chat(client, auth, message="tell me a story", model="gpt-4o-mini",
                    max_tokens=50, temperature=0.5)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["provider"] == "openai" and body["model"] == "gpt-4o-mini"
    assert body["response"] == "Hello from openai. You said: tell me a story"
    assert body["finish_reason"] == "stop"

    [call] = chat_calls(oai_a)
    assert call["path"] == "/v1/chat/completions"
    assert call["headers"]["authorization"] == f"Bearer {KEY_A}"
    sent = call["json"]
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == [
        {"role": "system", "content": mu_prompt},
        {"role": "user", "content": "tell me a story"},
    ]
    # Not OpenAI's own base URL: the widely understood max_tokens, not max_completion_tokens.
    assert sent["max_tokens"] == 50 and "max_completion_tokens" not in sent
    assert sent["temperature"] == 0.5
    assert "stream" not in sent and "stream_options" not in sent

    # The fake counts whitespace words; Gaia's own estimate would count punctuation apart.
    prompt = len(mu_prompt.split()) + 4
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": 9, "total_tokens": prompt + 9}
    assert stored(client.application, body["conversation_id"]) == (1, 2)


def test_openai_stream_relays_chunks_and_provider_usage(client, auth, oai_a, mu_prompt):
    response = chat(client, auth, message="stream please", model="gpt-4o-mini", stream=True)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    items = sse_items(response.get_data())
    assert items[-1] == ("event", None, "[DONE]")
    assert not error_events(items)
    chunks = chunks_of(items)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o-mini" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content_of(items) == "Hello from openai. You said: stream please"
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    prompt = len(mu_prompt.split()) + 2
    assert last["usage"] == {"prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7}
    assert last["provider"] == "openai"
    assert last["conversation_id"] == response.headers["X-Conversation-Id"]

    [call] = chat_calls(oai_a)
    sent = call["json"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0] == {"role": "system", "content": mu_prompt}
    assert call["headers"]["authorization"] == f"Bearer {KEY_A}"
    assert stored(client.application, last["conversation_id"]) == (1, 2)
    [event] = usage_rows(client.application)
    assert event["status"] == "ok" and event["stream"] is True
    assert (event["prompt_tokens"], event["completion_tokens"]) == (prompt, 7)


def test_openai_official_base_url_gets_max_completion_tokens():
    """Built only (no request is sent): the body for OpenAI itself and for anything else."""
    def body_for(base_url):
        declaration = ProviderDeclaration(id="openai", kind="openai", name="OpenAI", base_url=base_url,
                                          api_key="sk-x", list_models=False)
        provider = OpenAICompatibleProvider(declaration)
        return provider._body(ChatRequest("gpt-4o", (ChatMessage("user", "hi"),), max_tokens=64), stream=False)

    official = body_for(OPENAI_DEFAULT_BASE_URL)
    assert official["max_completion_tokens"] == 64 and "max_tokens" not in official
    other = body_for("http://127.0.0.1:9/v1")
    assert other["max_tokens"] == 64 and "max_completion_tokens" not in other


# -- the Anthropic adapter ----------------------------------------------------------------


def test_anthropic_non_stream_lifts_system_prompt_and_sends_its_headers(client, auth, ant, mu_prompt):
    response = chat(client, auth, provider="anthropic", model="claude-haiku-4-5", temperature=1.5)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["provider"] == "anthropic" and body["model"] == "claude-haiku-4-5"
    assert body["response"] == "Hello from anthropic. You said: hi there"

    [call] = chat_calls(ant)
    assert call["path"] == "/v1/messages"
    assert call["headers"]["x-api-key"] == KEY_ANT
    assert call["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in call["headers"]
    sent = call["json"]
    assert sent["system"] == mu_prompt
    assert sent["messages"] == [{"role": "user", "content": "hi there"}]
    assert sent["max_tokens"] == 1024  # required by the Messages API: sent even when not asked
    assert sent["temperature"] == 1.0  # Anthropic's range ends at 1
    prompt = len(mu_prompt.split()) + 2
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7}


def test_anthropic_stream_translates_events_usage_and_max_tokens_stop(client, auth, ant, mu_prompt):
    response = chat(client, auth, provider="anthropic", model="claude-haiku-4-5", max_tokens=3, stream=True)
    assert response.status_code == 200
    items = sse_items(response.get_data())
    assert items[-1] == ("event", None, "[DONE]") and not error_events(items)
    assert content_of(items) == "Hello from anthropic."
    last = chunks_of(items)[-1]
    assert last["choices"][0]["finish_reason"] == "length"  # stop_reason max_tokens
    prompt = len(mu_prompt.split()) + 2  # input_tokens of message_start
    assert last["usage"] == {"prompt_tokens": prompt, "completion_tokens": 3, "total_tokens": prompt + 3}
    assert last["provider"] == "anthropic"
    [call] = chat_calls(ant)
    assert call["json"]["stream"] is True and call["json"]["max_tokens"] == 3
    assert call["json"]["system"] == mu_prompt


def test_anthropic_merges_consecutive_turns_and_starts_with_a_user_turn(app, ant):
    provider = gaia(app).providers.get("anthropic")
    completion = provider.complete(ChatRequest(
        model="claude-haiku-4-5",
        messages=(
            ChatMessage("system", "Be brief."), ChatMessage("system", "Be kind."),
            ChatMessage("assistant", "Welcome back."),
            ChatMessage("user", "one"), ChatMessage("user", "two"),
            ChatMessage("assistant", "a"), ChatMessage("assistant", "b"),
            ChatMessage("user", "three"),
        ),
        max_tokens=20,
    ))
    sent = chat_calls(ant)[0]["json"]
    assert sent["system"] == "Be brief.\n\nBe kind."
    assert sent["max_tokens"] == 20
    assert sent["messages"] == [
        {"role": "user", "content": "(The conversation so far.)"},
        {"role": "assistant", "content": "Welcome back."},
        {"role": "user", "content": "one\n\ntwo"},
        {"role": "assistant", "content": "a\n\nb"},
        {"role": "user", "content": "three"},
    ]
    assert completion.text == "Hello from anthropic. You said: three"
    assert completion.finish_reason == "stop"


def test_anthropic_error_event_mid_stream_becomes_one_error_event(client, auth, ant):
    ant.behaviour = Behaviour(reply="one two three four", fail_after_chunks=2)
    response = chat(client, auth, provider="anthropic", model="claude-haiku-4-5", stream=True)
    assert response.status_code == 200
    items = sse_items(response.get_data())
    assert content_of(items) == "one two"
    [error] = error_events(items)
    assert error["error"]["provider"] == "anthropic" and "Overloaded" in error["error"]["message"]
    assert items[-1] == ("event", None, "[DONE]")


# -- providers and models -----------------------------------------------------------------


def test_only_configured_providers_are_listed_with_the_fakes_models(build, oai_a, auth):
    client = build(OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai_a.url + "/v1").test_client()
    body = client.get("/api/v0.2/providers", headers=auth).get_json()
    assert [p["id"] for p in body["providers"]] == ["openai", "local"]
    assert body["total_providers"] == 2
    openai = body["providers"][0]
    assert openai["status"] == "available"
    assert openai["models"] == ["gpt-4o", "gpt-4o-mini", "only-a"]  # the fake's GET /v1/models
    for missing in ("anthropic", "ollama", "backup"):
        response = client.get(f"/api/v0.2/providers/{missing}", headers=auth)
        assert response.status_code == 404
        assert response.get_json(force=True)["available"] == ["openai", "local"]

    detail = client.get("/api/v0.2/providers/openai", headers=auth).get_json()
    assert detail["name"] == "OpenAI" and {m["id"] for m in detail["models"]} == set(oai_a.models)
    assert all(m["provider"] == "openai" for m in detail["models"])
    models = client.get("/api/v0.2/models?provider=openai", headers=auth).get_json()
    assert models["total"] == 3 and sorted(m["id"] for m in models["models"]) == sorted(oai_a.models)
    assert client.get("/api/v0.2/models?provider=anthropic", headers=auth).status_code == 404
    one = client.get("/api/v0.2/models/openai/gpt-4o", headers=auth).get_json()
    assert one["id"] == "gpt-4o" and one["provider"] == "openai"
    health = client.get("/api/v0.2/providers/openai/health", headers=auth).get_json()
    assert health["status"] == "available" and health["latency_ms"] is not None


def test_model_lists_are_fetched_once_not_per_request(build, oai_a, auth):
    client = build(OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai_a.url + "/v1").test_client()
    paths = ["/api/v0.2/providers", "/api/v0.2/providers/openai", "/api/v0.2/providers/openai/models",
             "/api/v0.2/providers/openai/health", "/api/v0.2/models", "/api/v0.2/models?provider=openai",
             "/api/v0.2/models/gpt-4o", "/api/v0.2/models/openai/gpt-4o-mini", "/v1/models"]
    for _ in range(3):
        for path in paths:
            assert client.get(path, headers=auth).status_code == 200, path
        assert chat(client, auth, model="gpt-4o-mini").status_code == 200
    assert model_listings(oai_a) == 1
    assert len(chat_calls(oai_a)) == 3


def test_a_stopped_provider_is_unavailable_and_listings_still_answer_quickly(build, auth):
    gone = FakeOpenAI().start()
    url = gone.url
    gone.stop()
    client = build(OPENAI_API_KEY="sk-x", OPENAI_BASE_URL=url + "/v1").test_client()
    started = time.monotonic()
    health = client.get("/api/v0.2/providers/openai/health", headers=auth).get_json()
    assert health["status"] == "unavailable" and health["detail"]
    for _ in range(3):
        body = client.get("/api/v0.2/providers", headers=auth).get_json()
        statuses = {p["id"]: p["status"] for p in body["providers"]}
        assert statuses == {"openai": "unavailable", "local": "available"}
        models = client.get("/api/v0.2/models", headers=auth).get_json()
        assert {m["provider"] for m in models["models"]} == {"local"}
    assert time.monotonic() - started < 1.5


def test_models_endpoint_failing_with_500_means_unavailable(build, oai_a, auth):
    oai_a.queue.append(Behaviour(status=500))
    client = build(OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai_a.url + "/v1").test_client()
    health = client.get("/api/v0.2/providers/openai/health", headers=auth).get_json()
    assert health["status"] == "unavailable" and "500" in health["detail"]
    body = client.get("/api/v0.2/providers", headers=auth).get_json()
    assert {p["id"]: p["status"] for p in body["providers"]}["openai"] == "unavailable"
    assert client.get("/api/v0.2/models", headers=auth).status_code == 200
    assert model_listings(oai_a) == 1  # a failure is not retried on every request either


def test_models_endpoint_hanging_is_given_up_after_the_read_timeout(build, oai_a, auth):
    oai_a.behaviour = Behaviour(hang=True)
    client = build(OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai_a.url + "/v1").test_client()
    started = time.monotonic()
    health = client.get("/api/v0.2/providers/openai/health", headers=auth).get_json()
    assert health["status"] == "unavailable"
    assert client.get("/api/v0.2/providers", headers=auth).status_code == 200
    assert time.monotonic() - started < READ_TIMEOUT + 1.0


def test_model_lists_are_refreshed_in_the_background_after_the_ttl(build, auth, clock):
    with FakeOpenAI() as fake:
        client = build(clock, OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=fake.url + "/v1",
                       LLM_MODEL_LIST_TTL="1").test_client()

        def listed():
            return client.get("/api/v0.2/providers/openai", headers=auth).get_json()["models"]

        assert {m["id"] for m in listed()} == {"gpt-4o", "gpt-4o-mini"}
        fake.models.append("gpt-new")
        # The refresh takes a while: the listing meanwhile must not wait for it.
        fake.behaviour = Behaviour(first_token_delay=0.5)
        clock.advance(0.9)
        assert {m["id"] for m in listed()} == {"gpt-4o", "gpt-4o-mini"} and model_listings(fake) == 1
        clock.advance(0.2)
        started = time.monotonic()
        assert {m["id"] for m in listed()} == {"gpt-4o", "gpt-4o-mini"}  # stale, served at once
        assert time.monotonic() - started < 0.5
        assert wait_for(lambda: "gpt-new" in {m["id"] for m in listed()}, timeout=1.5)
        assert model_listings(fake) == 2


def test_polling_only_get_models_sees_new_models_after_the_ttl(build, auth, clock):
    with FakeOpenAI() as fake:
        client = build(clock, OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=fake.url + "/v1",
                       LLM_MODEL_LIST_TTL="1").test_client()

        def listed():
            body = client.get("/api/v0.2/models?provider=openai", headers=auth).get_json()
            return {m["id"] for m in body["models"]}

        assert listed() == listed() == {"gpt-4o", "gpt-4o-mini"}  # the second one from the cache
        fake.models.append("gpt-new")
        clock.advance(1.1)
        assert wait_for(lambda: "gpt-new" in listed(), timeout=1.5)


# -- GAIA_PROVIDERS_FILE ------------------------------------------------------------------


def test_providers_file_json_declares_a_provider_with_its_own_key(build, oai_b, auth, tmp_path):
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"providers": [{
        "id": "backup", "kind": "openai", "name": "Backup GPT", "base_url": oai_b.url + "/v1",
        "api_key_env": "BACKUP_LLM_KEY",
        "models": [{"id": "gpt-4o-mini", "name": "Mini (backup)", "context_window": 8000, "max_tokens": 100}],
    }]}))
    client = build(GAIA_PROVIDERS_FILE=str(path), BACKUP_LLM_KEY=KEY_B).test_client()
    body = client.get("/api/v0.2/providers", headers=auth).get_json()
    assert [p["id"] for p in body["providers"]] == ["backup", "local"]
    backup = body["providers"][0]
    assert backup["name"] == "Backup GPT" and backup["status"] == "available"
    assert backup["models"] == ["gpt-4o", "gpt-4o-mini"]  # listed by the fake, declared kept
    mini = client.get("/api/v0.2/models/backup/gpt-4o-mini", headers=auth).get_json()
    assert (mini["name"], mini["context_window"], mini["max_tokens"]) == ("Mini (backup)", 8000, 100)

    response = chat(client, auth, model="gpt-4o-mini")
    assert response.status_code == 200 and response.get_json()["provider"] == "backup"
    assert chat_calls(oai_b)[0]["headers"]["authorization"] == f"Bearer {KEY_B}"
    too_many = chat(client, auth, model="gpt-4o-mini", max_tokens=500)
    assert problem_of(too_many, 422)["errors"][0]["field"] == "max_tokens"


def test_providers_file_toml_with_declared_models_only_and_fallbacks(build, oai_b, auth, tmp_path):
    path = tmp_path / "providers.toml"
    path.write_text(f"""
[[providers]]
id = "backup"
kind = "openai"
name = "Backup (TOML)"
base_url = "{oai_b.url}/v1"
api_key_env = "BACKUP_LLM_KEY"
models = ["gpt-4o-mini"]
list_models = false

[fallbacks]
"backup/gpt-4o-mini" = ["local/gaia-local"]
""")
    app = build(GAIA_PROVIDERS_FILE=str(path), BACKUP_LLM_KEY=KEY_B)
    assert gaia(app).settings.llm.fallbacks == {"backup/gpt-4o-mini": ("local/gaia-local",)}
    client = app.test_client()
    detail = client.get("/api/v0.2/providers/backup", headers=auth).get_json()
    assert detail["name"] == "Backup (TOML)" and [m["id"] for m in detail["models"]] == ["gpt-4o-mini"]
    assert model_listings(oai_b) == 0  # list_models = false

    assert chat(client, auth, model="gpt-4o-mini").get_json()["provider"] == "backup"
    oai_b.behaviour = Behaviour(status=503)
    fallen = chat(client, auth, model="gpt-4o-mini")
    assert fallen.status_code == 200
    assert (fallen.get_json()["provider"], fallen.get_json()["model"]) == ("local", "gaia-local")


def _provider(**changes) -> dict:
    return {"id": "extra", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", **changes}


@pytest.mark.parametrize("content, suffix, message", [
    (json.dumps({"providers": [_provider(api_key_env="GAIA_TEST_UNSET_KEY_VARIABLE")]}), ".json",
     "GAIA_TEST_UNSET_KEY_VARIABLE"),
    (json.dumps({"providers": [_provider(id="Bad ID!")]}), ".json", "provider id"),
    (json.dumps({"providers": [_provider(id="")]}), ".json", "provider id"),
    (json.dumps({"providers": [_provider(), _provider()]}), ".json", "already taken"),
    (json.dumps({"providers": [_provider(id="local")]}), ".json", "already taken"),
    (json.dumps({"providers": [_provider(models=[{"id": "m", "colour": "red"}])]}), ".json", "colour"),
    (json.dumps({"providers": [_provider(models=[{"name": "no id"}])]}), ".json", "id"),
    (json.dumps({"providers": [_provider(kind="grpc")]}), ".json", "grpc"),
    (json.dumps({"providers": [_provider(base_url="ftp://127.0.0.1/v1")]}), ".json", "URL"),
    (json.dumps({"providers": [_provider()], "fallbacks": {"extra/m": "local/gaia-local"}}), ".json",
     "fallbacks"),
    ('{"providers": [', ".json", "not valid"),
    ("[[providers]\nid = ", ".toml", "not valid"),
    (json.dumps({"providers": {"id": "x"}}), ".json", "providers"),
], ids=["missing-key-variable", "bad-id", "empty-id", "duplicate-id", "built-in-id",
        "unknown-model-field", "model-without-id", "unknown-kind", "bad-base-url", "bad-fallbacks",
        "bad-json", "bad-toml", "providers-not-a-list"])
def test_bad_providers_files_stop_start_up(build, tmp_path, monkeypatch, content, suffix, message):
    monkeypatch.delenv("GAIA_TEST_UNSET_KEY_VARIABLE", raising=False)
    path = tmp_path / f"providers{suffix}"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        build(GAIA_PROVIDERS_FILE=str(path))


def test_missing_providers_file_stops_start_up(build, tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        build(GAIA_PROVIDERS_FILE=str(tmp_path / "nowhere.json"))


# -- fallback -----------------------------------------------------------------------------

FAILURES_BEFORE_ANSWERING = {
    "500": Behaviour(status=500),
    "503": Behaviour(status=503),
    "429": Behaviour(status=429, retry_after=1),
    "hang": Behaviour(hang=True),
}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("failure", list(FAILURES_BEFORE_ANSWERING))
def test_same_model_on_another_provider_answers_when_the_first_fails(
        client, auth, oai_a, oai_b, failure, stream):
    oai_a.behaviour = FAILURES_BEFORE_ANSWERING[failure]
    response = chat(client, auth, message="fall back please", model="gpt-4o-mini", stream=stream)
    assert response.status_code == 200, response.get_data(as_text=True)
    if stream:
        items = sse_items(response.get_data())
        assert not error_events(items)
        assert content_of(items) == "Hello from openai. You said: fall back please"  # B is a FakeOpenAI too
        last = chunks_of(items)[-1]
        provider, model = last["provider"], last["model"]
    else:
        body = response.get_json()
        provider, model = body["provider"], body["model"]
    assert (provider, model) == ("backup", "gpt-4o-mini")
    assert len(chat_calls(oai_a)) == 1 and len(chat_calls(oai_b)) == 1
    assert chat_calls(oai_b)[0]["json"]["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_provider_silent_past_the_read_timeout_falls_back(client, auth, oai_a, oai_b, stream):
    """Headers sent (when streamed), then nothing for longer than LLM_READ_TIMEOUT."""
    oai_a.behaviour = Behaviour(first_token_delay=READ_TIMEOUT + 0.4)
    started = time.monotonic()
    response = chat(client, auth, model="gpt-4o-mini", stream=stream)
    assert response.status_code == 200
    if stream:
        items = sse_items(response.get_data())
        assert ("comment", "keepalive") in items and not error_events(items)
        provider = chunks_of(items)[-1]["provider"]
    else:
        provider = response.get_json()["provider"]
    assert provider == "backup"
    assert READ_TIMEOUT * 0.9 <= time.monotonic() - started < READ_TIMEOUT + 1.0
    if stream:  # A's connection was dropped: its next write fails (counted here, not later)
        assert wait_for(lambda: oai_a.disconnects == 1, timeout=2.0)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_provider_that_refuses_connections_falls_back(client, auth, oai_a, stream):
    response = chat(client, auth, provider="dead", model="gpt-4o-mini", stream=stream)
    assert response.status_code == 200, response.get_data(as_text=True)
    if stream:
        provider = chunks_of(sse_items(response.get_data()))[-1]["provider"]
    else:
        provider = response.get_json()["provider"]
    assert provider == "openai" and len(chat_calls(oai_a)) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_declared_fallback_to_anthropic(client, auth, oai_a, ant, mu_prompt, stream):
    oai_a.behaviour = Behaviour(status=503)
    response = chat(client, auth, model="only-a", stream=stream)
    assert response.status_code == 200, response.get_data(as_text=True)
    if stream:
        items = sse_items(response.get_data())
        last = chunks_of(items)[-1]
        answer = (last["provider"], last["model"], content_of(items))
    else:
        body = response.get_json()
        answer = (body["provider"], body["model"], body["response"])
    assert answer == ("anthropic", "claude-haiku-4-5", "Hello from anthropic. You said: hi there")
    [call] = chat_calls(ant)
    assert call["json"]["model"] == "claude-haiku-4-5" and call["json"]["system"] == mu_prompt
    assert len(chat_calls(oai_a)) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_fallback_false_gives_the_client_the_error(client, auth, oai_a, oai_b, stream):
    oai_a.behaviour = Behaviour(status=503)
    response = chat(client, auth, model="gpt-4o-mini", fallback=False, stream=stream)
    problem = problem_of(response, 502)
    assert problem["type"].endswith("/problems/provider-unavailable")
    assert problem["provider"] == "openai"
    assert chat_calls(oai_b) == []


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_request_the_provider_rejects_is_not_retried_elsewhere(client, auth, oai_a, oai_b, stream):
    oai_a.behaviour = Behaviour(status=400)
    response = chat(client, auth, model="gpt-4o-mini", stream=stream)
    problem = problem_of(response, 400)
    assert problem["type"].endswith("/problems/provider-rejected-request")
    assert "Invalid request." in problem["detail"]
    assert len(chat_calls(oai_a)) == 1 and chat_calls(oai_b) == []


@pytest.mark.parametrize("upstream, status, problem_type", [
    (Behaviour(status=500), 502, "provider-unavailable"),
    (Behaviour(status=401), 502, "provider-misconfigured"),
    (Behaviour(status=403), 502, "provider-misconfigured"),
    (Behaviour(status=404), 404, "unknown-model"),
    (Behaviour(status=422), 400, "provider-rejected-request"),
    (Behaviour(status=429), 429, "provider-rate-limited"),
    (Behaviour(garbage=True), 502, "provider-bad-response"),
], ids=["500", "401", "403", "404", "422", "429", "garbage"])
def test_provider_failures_map_to_statuses(client, auth, oai_a, upstream, status, problem_type):
    oai_a.behaviour = upstream
    problem = problem_of(chat(client, auth, model="gpt-4o-mini", fallback=False), status)
    assert problem["type"].endswith("/problems/" + problem_type)
    if problem_type == "provider-misconfigured":
        assert "credentials" in problem["detail"]


def test_garbage_is_502_and_not_retried_elsewhere(client, auth, oai_a, oai_b):
    oai_a.behaviour = Behaviour(garbage=True)
    problem = problem_of(chat(client, auth, model="gpt-4o-mini"), 502)
    assert problem["type"].endswith("/problems/provider-bad-response")
    assert chat_calls(oai_b) == []


def test_retry_after_is_passed_on_and_honoured(client, auth, oai_a, oai_b):
    oai_a.behaviour = Behaviour(status=429, retry_after=7)
    first = chat(client, auth, model="gpt-4o-mini", fallback=False)
    assert problem_of(first, 429)["type"].endswith("/problems/provider-rate-limited")
    assert first.headers["Retry-After"] == "7"
    assert len(chat_calls(oai_a)) == 1

    # Within the pause: refused at once, the provider is not called again.
    for stream in (False, True):
        started = time.monotonic()
        again = chat(client, auth, model="gpt-4o-mini", fallback=False, stream=stream)
        problem_of(again, 429)
        assert 1 <= int(again.headers["Retry-After"]) <= 7
        assert time.monotonic() - started < 0.5
    assert len(chat_calls(oai_a)) == 1

    # With a fallback available, straight to it.
    fallen = chat(client, auth, model="gpt-4o-mini")
    assert fallen.status_code == 200 and fallen.get_json()["provider"] == "backup"
    assert len(chat_calls(oai_a)) == 1 and len(chat_calls(oai_b)) == 1


# -- streaming ----------------------------------------------------------------------------


def test_slow_first_token_gets_keepalive_comments_first(client, auth, oai_a):
    oai_a.behaviour = Behaviour(first_token_delay=0.6)
    response = chat(client, auth, model="gpt-4o-mini", stream=True)
    assert response.status_code == 200
    items = sse_items(response.get_data())
    first_data = next(i for i, item in enumerate(items) if item[0] == "event")
    assert first_data >= 2
    # The provider accepted at once (its headers came): the response starts with a comment,
    # then keeps the connection alive until the first token.
    assert items[:first_data] == [("comment", "connected")] + [("comment", "keepalive")] * (first_data - 1)
    assert content_of(items) == "Hello from openai. You said: hi there"
    assert items[-1] == ("event", None, "[DONE]")


def test_mid_stream_failure_ends_with_one_error_event_and_nothing_stored(client, auth, oai_a):
    app = client.application
    oai_a.behaviour = Behaviour(reply="one two three four five six", fail_after_chunks=2)
    response = chat(client, auth, message="break please", model="gpt-4o-mini", stream=True)
    assert response.status_code == 200
    items = sse_items(response.get_data())
    assert content_of(items) == "one two"
    assert [i[1] for i in items if i[0] == "event"].count("error") == 1
    error_at = next(i for i, item in enumerate(items) if item[:2] == ("event", "error"))
    assert items[error_at + 1:] == [("event", None, "[DONE]")]  # the error, then [DONE], then nothing
    [error] = error_events(items)
    assert set(error["error"]) >= {"message", "type", "code"}
    assert error["error"]["type"] == "interrupted" and error["error"]["provider"] == "openai"
    assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks_of(items))

    conversation_id = response.headers["X-Conversation-Id"]
    assert stored(app, conversation_id) == (0, 0)
    assert client.get(f"/api/v0.2/conversations/{conversation_id}", headers=auth).status_code == 404
    [event] = usage_rows(app)
    assert event["status"] == "error" and event["error_type"] == "interrupted"
    assert event["provider"] == "openai" and event["model"] == "gpt-4o-mini" and event["stream"] is True
    assert event["conversation_id"] is None


def test_no_switch_of_provider_once_content_was_sent(client, auth, oai_a, oai_b):
    oai_a.behaviour = Behaviour(reply="one two three four", fail_after_chunks=2)
    response = chat(client, auth, model="gpt-4o-mini", stream=True)
    items = sse_items(response.get_data())
    assert content_of(items) == "one two"
    assert len(error_events(items)) == 1
    assert chat_calls(oai_b) == []


@pytest.mark.parametrize("upstream, status", [
    (Behaviour(status=500), 502),
    (Behaviour(status=429, retry_after=3), 429),
    (Behaviour(status=400), 400),
    (Behaviour(garbage=True), 502),
], ids=["500", "429", "400", "garbage"])
def test_stream_failing_before_the_first_byte_is_a_plain_problem(client, auth, oai_a, upstream, status):
    oai_a.behaviour = upstream
    response = chat(client, auth, model="gpt-4o-mini", stream=True, fallback=False)
    problem_of(response, status)
    if status == 429:
        assert response.headers["Retry-After"] == "3"
    [event] = usage_rows(client.application)
    assert event["status"] == "error" and event["stream"] is True


def test_hung_provider_is_504_after_the_read_timeout(client, auth, oai_a):
    oai_a.behaviour = Behaviour(hang=True)
    started = time.monotonic()
    response = chat(client, auth, model="gpt-4o-mini", fallback=False)
    elapsed = time.monotonic() - started
    assert problem_of(response, 504)["type"].endswith("/problems/provider-timeout")
    assert READ_TIMEOUT * 0.9 <= elapsed < READ_TIMEOUT + 1.5


def test_hung_stream_keeps_alive_then_reports_the_timeout(client, auth, oai_a):
    """Past the first keepalive the stream has begun (200): the timeout comes as an error event."""
    oai_a.behaviour = Behaviour(hang=True)
    started = time.monotonic()
    response = chat(client, auth, model="gpt-4o-mini", fallback=False, stream=True)
    items = sse_items(response.get_data())
    assert time.monotonic() - started < READ_TIMEOUT + 1.5
    assert response.status_code == 200
    assert items[0] == ("comment", "keepalive")
    [error] = error_events(items)
    assert error["error"]["type"] == "timeout"
    assert items[-1] == ("event", None, "[DONE]")


def test_client_disconnect_stops_the_upstream_stream(app, key, oai_a):
    oai_a.behaviour = Behaviour(reply=" ".join(f"w{i}" for i in range(200)), chunk_delay=0.2)
    with serving(app) as base, requests.Session() as http:
        http.trust_env = False
        response = http.post(base + "/api/v0.2/chat", headers={"X-API-Key": key}, stream=True, timeout=5,
                             json={"message": "a long story", "model": "gpt-4o-mini", "stream": True})
        assert response.status_code == 200
        first = next(line for line in response.iter_lines() if line.startswith(b"data:"))
        assert b"chat.completion.chunk" in first
        response.close()
        assert wait_for(lambda: oai_a.disconnects == 1, timeout=2.0)
        assert oai_a.stream_finished == 0

        def cancelled():
            return [e for e in usage_rows(app) if e["status"] == "cancelled"]

        assert wait_for(cancelled, timeout=2.0)
        [event] = cancelled()
        assert event["provider"] == "openai" and event["stream"] is True


def test_client_disconnect_stops_an_upstream_call_still_waiting_for_headers(build, key):
    with FakeOpenAI(api_key=KEY_A) as fake:
        app = build(OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=fake.url + "/v1", LLM_READ_TIMEOUT="4")
        gaia(app).providers.models()
        fake.behaviour = Behaviour(hang=True)
        with serving(app) as base, requests.Session() as http:
            http.trust_env = False
            response = http.post(base + "/api/v0.2/chat", headers={"X-API-Key": key}, stream=True,
                                 timeout=5, json={"message": "hello", "model": "gpt-4o-mini",
                                                  "stream": True, "fallback": False})
            assert response.status_code == 200
            assert next(response.iter_lines()) == b": keepalive"
            assert len(chat_calls(fake)) == 1 and len(fake._server.open_sockets) == 1
            response.close()
            # The app's end of the provider connection closes soon after the client's.
            assert wait_for(lambda: not fake._server.open_sockets, timeout=1.0)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_streams_read_to_their_end_reuse_the_provider_connection(client, auth, oai_a, ant, provider):
    fake, model = (oai_a, "gpt-4o") if provider == "openai" else (ant, "claude-haiku-4-5")
    for message in ("one", "two", "three"):
        response = client.post("/api/v0.2/chat", json={"message": message, "model": model, "stream": True},
                               headers=auth)
        assert response.status_code == 200 and response.get_data().endswith(b"data: [DONE]\n\n")
    streams = [r for r in fake.requests if r["method"] == "POST"]
    assert len(streams) == 3
    assert len({r["client"] for r in streams}) == 1, "each stream opened a new connection"


def test_a_stream_starts_as_soon_as_the_provider_accepts_not_at_its_first_token(build, oai_a, auth):
    """With a 5 s keepalive and a 2 s first token, the response head still comes at once."""
    client = build(OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai_a.url + "/v1",
                   CHAT_STREAM_KEEPALIVE="5", LLM_READ_TIMEOUT="5").test_client()
    assert client.get("/api/v0.2/models", headers=auth).status_code == 200  # model list fetched
    oai_a.behaviour = Behaviour(first_token_delay=2.0)
    started = time.monotonic()
    response = client.post("/api/v0.2/chat", json={"message": "hi", "model": "gpt-4o", "stream": True},
                           headers=auth, buffered=False)
    head_after = time.monotonic() - started
    assert response.status_code == 200
    body = b"".join(response.response)
    response.close()
    assert head_after < 1.0, f"the response head took {head_after:.2f} s"
    assert body.startswith(b": connected\n\n") and body.endswith(b"data: [DONE]\n\n")
