"""POST /api/v0.2/chat over HTTP with the built-in `local` provider.

The local provider is deterministic: its answer and its prompt_tokens are a function of the
exact messages it is sent. So `expected(...)` (the same provider, called directly) tells what
Gaia must have sent: which system prompt, which history, which new message.
"""

import json
import time
import uuid

import pytest
from sqlalchemy import text

from gaia_app.extensions import db
from gaia_app.models import DEFAULT_PERSONA_ID, ApiKey, Message, Persona, UsageEvent, User
from gaia_app.providers.base import ChatMessage, ChatRequest, ProviderError, StreamChunk
from gaia_app.providers.base import ProviderDeclaration
from gaia_app.providers.local import LocalProvider
from gaia_app.state import gaia
from tests.conftest import make_app, problem_of, upgrade

CHAT = "/api/v0.2/chat"
CONVERSATIONS = "/api/v0.2/conversations"
PERSONAS = "/api/v0.2/personas"
MU = str(DEFAULT_PERSONA_ID)


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def usage(app):
    """The session app's usage recorder, without its flush thread: tests flush it."""
    recorder = gaia(app).usage
    recorder.background = False
    yield recorder
    recorder.discard_pending()


@pytest.fixture
def headers(make):
    def for_user(email="alice@example.com", **kwargs):
        return {"X-API-Key": make.key(email, **kwargs)}

    return for_user


@pytest.fixture(scope="module")
def limited_app(database_url, tmp_path_factory):
    """A one-off app on the same database: 2 messages of history, messages of 50 characters."""
    app = make_app(database_url, tmp_path_factory, CHAT_HISTORY_MESSAGES="2", CHAT_MAX_MESSAGE_CHARS="50")
    gaia(app).usage.background = False
    upgrade(app)
    yield app
    with app.app_context():
        db.engine.dispose()


def expected(*turns, system=None, model="gaia-local", max_tokens=None):
    """What the local provider answers to `system` + `turns` ((role, content) pairs or str)."""
    messages = [ChatMessage("system", system)] if system else []
    for turn in turns:
        messages.append(ChatMessage("user", turn) if isinstance(turn, str) else ChatMessage(*turn))
    return LocalProvider(ProviderDeclaration(id="local", kind="local", name="Gaia local")).complete(ChatRequest(model=model, messages=tuple(messages), max_tokens=max_tokens))


def system_prompt(app, persona_id=MU):
    with app.app_context():
        return db.session.get(Persona, uuid.UUID(str(persona_id))).system_prompt


def stored_counts(app):
    with app.app_context():
        with db.engine.connect() as connection:
            return tuple(
                connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()
                for table in ("conversations", "messages")
            )


def stored_messages(app, conversation_id):
    with app.app_context():
        rows = db.session.execute(
            db.select(Message)
            .where(Message.conversation_id == uuid.UUID(conversation_id))
            .order_by(Message.created_at, Message.id)
        ).scalars().all()
        return [
            {"role": m.role, "content": m.content, "provider": m.provider, "model": m.model,
             "prompt_tokens": m.prompt_tokens, "completion_tokens": m.completion_tokens}
            for m in rows
        ]


def usage_rows(app, recorder, expected_count):
    """Flush the recorder, then the usage events (oldest first) once `expected_count` are there."""
    recorder.flush()
    deadline = time.monotonic() + 3  # in case a flush thread started elsewhere holds a batch
    while True:
        with app.app_context():
            rows = db.session.execute(db.select(UsageEvent).order_by(UsageEvent.created_at)).scalars().all()
            db.session.expunge_all()
        if len(rows) >= expected_count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def key_id(app, email="alice@example.com"):
    with app.app_context():
        return db.session.execute(
            db.select(ApiKey.id).join(User, User.id == ApiKey.user_id).where(User.email == email)
        ).scalar_one()


def user_id(app, email="alice@example.com"):
    with app.app_context():
        return db.session.execute(db.select(User.id).where(User.email == email)).scalar_one()


def chat(client, auth, message="Hello there", **fields):
    response = client.post(CHAT, json={"message": message, **fields}, headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def new_persona(client, auth, name, prompt):
    response = client.post(PERSONAS, json={"name": name, "system_prompt": prompt}, headers=auth)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


def sse_events(response):
    """The blocks of an event stream, as (event name or None, data string)."""
    events = []
    for block in response.get_data(as_text=True).split("\n\n"):
        if not block or block.startswith(":"):
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
        events.append((name, "\n".join(data)))
    return events


# -- not streamed ---------------------------------------------------------------------------


def test_answer_shape_and_the_stored_exchange(app, client, headers):
    alice = headers()
    response = client.post(CHAT, json={"message": "Hello there"}, headers=alice)
    assert response.status_code == 200 and response.content_type == "application/json"
    body = response.get_json()
    assert set(body) == {
        "response", "provider", "model", "conversation_id", "persona_id", "finish_reason",
        "usage", "response_time_ms",
    }
    want = expected("Hello there", system=system_prompt(app))
    assert body["response"] == want.text and body["response"]
    assert body["provider"] == "local" and body["model"] == "gaia-local"
    assert body["persona_id"] == MU and body["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": want.usage.prompt_tokens,
        "completion_tokens": want.usage.completion_tokens,
        "total_tokens": want.usage.prompt_tokens + want.usage.completion_tokens,
    }
    assert isinstance(body["response_time_ms"], (int, float)) and body["response_time_ms"] >= 0
    conversation_id = body["conversation_id"]
    uuid.UUID(conversation_id)

    assert stored_messages(app, conversation_id) == [
        {"role": "user", "content": "Hello there", "provider": None, "model": None,
         "prompt_tokens": None, "completion_tokens": None},
        {"role": "assistant", "content": body["response"], "provider": "local", "model": "gaia-local",
         "prompt_tokens": body["usage"]["prompt_tokens"],
         "completion_tokens": body["usage"]["completion_tokens"]},
    ]
    conversation = client.get(f"{CONVERSATIONS}/{conversation_id}", headers=alice).get_json()
    assert conversation["message_count"] == 2 and conversation["title"] == "Hello there"
    assert conversation["persona_id"] == MU and conversation["model"] == "local/gaia-local"
    assert [m["content"] for m in conversation["messages"]] == ["Hello there", body["response"]]

    # Deterministic: the same conversation (a new one, same persona, same words) gets the same answer.
    again = chat(client, alice)
    assert again["response"] == body["response"] and again["usage"] == body["usage"]
    assert again["conversation_id"] != conversation_id
    assert stored_counts(app) == (2, 4)


def test_a_second_message_continues_the_conversation_with_its_history(app, client, headers):
    alice = headers()
    first = chat(client, alice, "Hello there")
    second = chat(client, alice, "Where should we go?", conversation_id=first["conversation_id"])
    assert second["conversation_id"] == first["conversation_id"]
    want = expected(
        "Hello there", ("assistant", first["response"]), "Where should we go?", system=system_prompt(app)
    )
    assert second["response"] == want.text
    assert second["usage"]["prompt_tokens"] == want.usage.prompt_tokens > first["usage"]["prompt_tokens"]

    conversation = client.get(f"{CONVERSATIONS}/{first['conversation_id']}", headers=alice).get_json()
    assert conversation["message_count"] == 4
    assert [(m["role"], m["content"]) for m in conversation["messages"]] == [
        ("user", "Hello there"), ("assistant", first["response"]),
        ("user", "Where should we go?"), ("assistant", second["response"]),
    ]
    assert stored_counts(app) == (1, 4)


def test_max_tokens_is_honoured_and_bounded_by_the_model(app, client, headers):
    alice = headers()
    short = chat(client, alice, model="gaia-local-mini", max_tokens=3)
    assert short["model"] == "gaia-local-mini"
    assert short["finish_reason"] == "length" and 0 < short["usage"]["completion_tokens"] <= 3
    assert short["response"] == expected("Hello there", system=system_prompt(app), model="gaia-local-mini",
                                         max_tokens=3).text
    assert chat(client, alice, max_tokens=1024)["finish_reason"] == "stop"

    before = stored_counts(app)
    for model, too_many in (("gaia-local-mini", 257), ("gaia-local", 1025), ("local/gaia-local-mini", 1000)):
        body = problem_of(client.post(CHAT, json={"message": "hi", "model": model, "max_tokens": too_many},
                                      headers=alice), 422)
        assert body["errors"][0]["field"] == "max_tokens"
    assert stored_counts(app) == before


def test_model_can_be_named_with_or_without_its_provider(client, headers):
    alice = headers()
    for fields in ({"model": "local/gaia-local-mini"}, {"provider": "local", "model": "gaia-local-mini"},
                   {"model": "gaia-local-mini"}):
        answer = chat(client, alice, **fields)
        assert (answer["provider"], answer["model"]) == ("local", "gaia-local-mini"), fields
    assert (chat(client, alice, provider="local")["model"]) == "gaia-local"
    assert (chat(client, alice)["model"]) == "gaia-local"


def test_unknown_model_or_provider_is_404_naming_what_exists(app, client, headers):
    alice = headers()
    before = stored_counts(app)
    body = problem_of(client.post(CHAT, json={"message": "hi", "model": "gpt-9"}, headers=alice), 404)
    assert body["type"] == "/problems/unknown-model" and "gpt-9" in body["detail"]
    assert {"local/gaia-local", "local/gaia-local-mini"} <= set(body["available"])
    assert "local/gaia-local" in body["detail"]

    body = problem_of(client.post(CHAT, json={"message": "hi", "provider": "local", "model": "gpt-9"},
                                  headers=alice), 404)
    assert body["type"] == "/problems/unknown-model"
    assert set(body["available"]) == {"gaia-local", "gaia-local-mini"}

    body = problem_of(client.post(CHAT, json={"message": "hi", "provider": "nope"}, headers=alice), 404)
    assert body["type"] == "/problems/unknown-provider" and "nope" in body["detail"]
    assert "local" in body["available"]
    body = problem_of(client.post(CHAT, json={"message": "hi", "provider": "nope", "model": "gaia-local"},
                                  headers=alice), 404)
    assert body["type"] == "/problems/unknown-provider"
    assert stored_counts(app) == before


# -- personas -------------------------------------------------------------------------------


def test_persona_is_the_requests_then_the_conversations_then_the_users_then_mu(app, client, headers):
    alice = headers()
    sage_prompt = "You are Sage, an old and patient teacher who speaks in riddles and long sentences."
    bard_prompt = "You are Bard."
    sage = new_persona(client, alice, "Sage", sage_prompt)
    bard = new_persona(client, alice, "Bard", bard_prompt)
    mu_prompt = system_prompt(app)

    # Nothing chosen: Mu, with Mu's system prompt.
    default = chat(client, alice, "Hi")
    assert default["persona_id"] == MU
    assert default["response"] == expected("Hi", system=mu_prompt).text
    assert default["usage"]["prompt_tokens"] == expected("Hi", system=mu_prompt).usage.prompt_tokens

    # The user's chosen persona.
    assert client.post(f"{PERSONAS}/set", json={"persona_id": sage}, headers=alice).status_code == 200
    chosen = chat(client, alice, "Hi")
    assert chosen["persona_id"] == sage
    want = expected("Hi", system=sage_prompt)
    assert chosen["response"] == want.text and chosen["usage"]["prompt_tokens"] == want.usage.prompt_tokens
    # The system prompt is sent: a longer one costs more prompt tokens.
    bard_once = chat(client, alice, "Hi", persona_id=bard)
    assert bard_once["usage"]["prompt_tokens"] < chosen["usage"]["prompt_tokens"]

    # The request's persona beats the user's choice.
    named = chat(client, alice, "Hi", persona_id=bard)
    assert named["persona_id"] == bard and named["response"] == expected("Hi", system=bard_prompt).text

    # A conversation's persona beats the user's choice...
    with_bard = client.post(CONVERSATIONS, json={"persona_id": bard}, headers=alice).get_json()
    in_conversation = chat(client, alice, "Hi", conversation_id=with_bard["id"])
    assert in_conversation["persona_id"] == bard
    assert in_conversation["response"] == expected("Hi", system=bard_prompt).text
    # ... and the request's beats the conversation's.
    overridden = chat(client, alice, "Hi again", conversation_id=with_bard["id"], persona_id=MU)
    assert overridden["persona_id"] == MU
    assert overridden["response"] == expected(
        "Hi", ("assistant", in_conversation["response"]), "Hi again", system=mu_prompt
    ).text

    # A conversation started by chat keeps the persona it started with.
    started = chat(client, alice, "Hi")  # Sage, the user's choice
    assert client.get(f"{CONVERSATIONS}/{started['conversation_id']}", headers=alice).get_json()["persona_id"] == sage
    client.post(f"{PERSONAS}/set", json={"persona_id": bard}, headers=alice)
    continued = chat(client, alice, "More", conversation_id=started["conversation_id"])
    assert continued["persona_id"] == sage
    assert continued["response"] == expected(
        "Hi", ("assistant", started["response"]), "More", system=sage_prompt
    ).text


def test_someone_elses_persona_or_conversation_is_404_and_nothing_is_stored(app, client, headers):
    alice, bob = headers(), headers("bob@example.com")
    secret = new_persona(client, alice, "Secret", "You are Alice's own.")
    alices = chat(client, alice, "Mine")
    before = stored_counts(app)

    for persona in (secret, str(uuid.uuid4())):
        body = problem_of(client.post(CHAT, json={"message": "hi", "persona_id": persona}, headers=bob), 404)
        assert body["type"] == "/problems/not-found"
    for conversation in (alices["conversation_id"], str(uuid.uuid4())):
        body = problem_of(
            client.post(CHAT, json={"message": "hi", "conversation_id": conversation}, headers=bob), 404
        )
        assert body["type"] == "/problems/not-found"
        body = problem_of(
            client.post(CHAT, json={"message": "hi", "conversation_id": conversation, "stream": True},
                        headers=bob), 404
        )
    assert stored_counts(app) == before
    conversation = client.get(f"{CONVERSATIONS}/{alices['conversation_id']}", headers=alice).get_json()
    assert conversation["message_count"] == 2 and len(conversation["messages"]) == 2
    # Mu, a built-in persona, can be named by anyone.
    assert chat(client, bob, persona_id=MU)["persona_id"] == MU


# -- streaming ------------------------------------------------------------------------------


def test_streamed_answer(app, client, headers, usage):
    alice = headers()
    plain = chat(client, alice, "Tell me a story")
    response = client.post(CHAT, json={"message": "Tell me a story", "stream": True}, headers=alice)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Cache-Control"] == "no-cache"
    conversation_id = response.headers["X-Conversation-Id"]
    assert conversation_id != plain["conversation_id"]

    events = sse_events(response)
    assert events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in events)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gaia-local" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    answer_text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert answer_text == plain["response"]
    assert len(chunks) > 3  # word by word
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])

    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and last["choices"][0]["delta"] == {}
    assert last["usage"] == plain["usage"]
    assert last["provider"] == "local" and last["conversation_id"] == conversation_id
    assert last["persona_id"] == MU

    # Stored once the stream is over.
    assert stored_messages(app, conversation_id) == [
        {"role": "user", "content": "Tell me a story", "provider": None, "model": None,
         "prompt_tokens": None, "completion_tokens": None},
        {"role": "assistant", "content": plain["response"], "provider": "local", "model": "gaia-local",
         "prompt_tokens": plain["usage"]["prompt_tokens"],
         "completion_tokens": plain["usage"]["completion_tokens"]},
    ]
    rows = usage_rows(app, usage, 2)
    assert [(r.stream, r.status) for r in rows] == [(False, "ok"), (True, "ok")]
    streamed = rows[1]
    assert streamed.conversation_id == uuid.UUID(conversation_id)
    assert streamed.first_token_ms is not None and 0 <= streamed.first_token_ms <= streamed.latency_ms
    assert rows[0].first_token_ms is None
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        plain["usage"]["prompt_tokens"], plain["usage"]["completion_tokens"])

    # Streamed on an existing conversation: continued, with its history, and length-limited.
    more = client.post(CHAT, json={"message": "And then?", "stream": True, "conversation_id": conversation_id,
                                   "model": "gaia-local-mini", "max_tokens": 2}, headers=alice)
    assert more.headers["X-Conversation-Id"] == conversation_id
    chunks = [json.loads(data) for _, data in sse_events(more)[:-1]]
    want = expected("Tell me a story", ("assistant", plain["response"]), "And then?",
                    system=system_prompt(app), model="gaia-local-mini", max_tokens=2)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == want.text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["prompt_tokens"] == want.usage.prompt_tokens
    assert chunks[-1]["usage"]["completion_tokens"] <= 2
    assert client.get(f"{CONVERSATIONS}/{conversation_id}", headers=alice).get_json()["message_count"] == 4


def test_a_provider_failing_before_the_stream_starts_is_a_problem(app, client, headers, usage, monkeypatch):
    alice = headers()
    local = gaia(app).providers.get("local")

    def broken(request):
        raise ProviderError("local", "unavailable", "The local model is down.")
        yield  # a generator, like a real stream

    monkeypatch.setattr(local, "stream", broken)
    monkeypatch.setattr(local, "complete", lambda request: next(broken(request)))
    before = stored_counts(app)
    for stream in (False, True):
        body = problem_of(client.post(CHAT, json={"message": "hi", "stream": stream}, headers=alice), 502)
        assert body["type"] == "/problems/provider-unavailable" and body["provider"] == "local"
    assert stored_counts(app) == before

    rows = usage_rows(app, usage, 2)
    assert [(r.stream, r.status, r.error_type) for r in rows] == [
        (False, "error", "unavailable"), (True, "error", "unavailable")]
    for row in rows:
        assert row.kind == "chat" and row.provider == "local" and row.model == "gaia-local"
        assert row.user_id == user_id(app) and row.api_key_id == key_id(app)
        assert row.conversation_id is None and row.total_tokens == 0 and row.latency_ms >= 0


def test_a_stream_broken_midway_ends_with_an_error_event_and_stores_nothing(app, client, headers, usage,
                                                                             monkeypatch):
    alice = headers()
    local = gaia(app).providers.get("local")

    def breaks(request):
        yield StreamChunk(text="Once")
        raise ProviderError("local", "interrupted", "The connection broke.")

    monkeypatch.setattr(local, "stream", breaks)
    before = stored_counts(app)
    response = client.post(CHAT, json={"message": "hi", "stream": True}, headers=alice)
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == (None, "[DONE]")
    name, data = events[-2]
    assert name == "error"
    assert json.loads(data) == {"error": {"message": "The connection broke.", "type": "interrupted",
                                          "code": "provider_interrupted", "provider": "local"}}
    assert json.loads(events[1][1])["choices"][0]["delta"] == {"content": "Once"}
    assert stored_counts(app) == before
    [row] = usage_rows(app, usage, 1)
    assert (row.stream, row.status, row.error_type, row.conversation_id) == (True, "error", "interrupted", None)
    assert row.first_token_ms is not None


# -- usage events ---------------------------------------------------------------------------


def test_one_usage_event_per_request(app, client, headers, usage):
    alice = headers()
    first = chat(client, alice, "Hello there")
    second = chat(client, alice, "Again", conversation_id=first["conversation_id"], model="gaia-local-mini")
    rows = usage_rows(app, usage, 2)
    assert len(rows) == 2
    for row, answer in zip(rows, (first, second)):
        assert row.kind == "chat" and row.status == "ok" and row.error_type is None
        assert row.user_id == user_id(app) and row.api_key_id == key_id(app)
        assert row.conversation_id == uuid.UUID(first["conversation_id"])
        assert row.provider == "local" and row.model == answer["model"] and row.stream is False
        assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (
            answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"],
            answer["usage"]["total_tokens"])
        assert row.cost == 0.0  # the local provider's prices are 0
        assert row.latency_ms >= 0 and row.first_token_ms is None
    assert usage.flush() == 0


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "message"),
        ({"model": "gaia-local"}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   \n\t "}, "message"),
        ({"message": None}, "message"),
        ({"message": 123}, "message"),
        ({"message": ["hi"]}, "message"),
        ({"message": "hi", "stream": "maybe"}, "stream"),
        ({"message": "hi", "stream": [1]}, "stream"),
        ({"message": "hi", "stream": 2}, "stream"),
        ({"message": "hi", "stream": None}, "stream"),
        ({"message": "hi", "max_tokens": 0}, "max_tokens"),
        ({"message": "hi", "max_tokens": -1}, "max_tokens"),
        ({"message": "hi", "max_tokens": "x"}, "max_tokens"),
        ({"message": "hi", "max_tokens": True}, "max_tokens"),
        ({"message": "hi", "temperature": 3}, "temperature"),
        ({"message": "hi", "temperature": -0.1}, "temperature"),
        ({"message": "hi", "temperature": "hot"}, "temperature"),
        ({"message": "hi", "model": ""}, "model"),
        ({"message": "hi", "model": 7}, "model"),
        ({"message": "hi", "provider": ""}, "provider"),
        ({"message": "hi", "conversation_id": "not-a-uuid"}, "conversation_id"),
        ({"message": "hi", "conversation_id": 42}, "conversation_id"),
        ({"message": "hi", "persona_id": "Mu"}, "persona_id"),
        ({"message": "hi", "messages": [{"role": "user", "content": "hi"}]}, "messages"),
        ({"message": "hi", "user": "alice"}, "user"),
        ({"message": "x" * 32_001}, "message"),
    ],
    ids=lambda value: json.dumps(value)[:40] if isinstance(value, dict) else value,
)
def test_invalid_requests_are_422_and_store_nothing(app, client, headers, payload, field):
    alice = headers()
    before = stored_counts(app)
    body = problem_of(client.post(CHAT, json=payload, headers=alice), 422)
    assert body["type"] == "/problems/validation"
    assert [e["field"] for e in body["errors"]] == [field]
    assert stored_counts(app) == before == (0, 0)


def test_bodies_that_are_not_a_chat_request(app, client, headers):
    alice = headers()
    json_headers = {**alice, "Content-Type": "application/json"}
    for raw in ("{", '{"message": "hi"', "not json", "{\"message\": \"hi\",}"):
        body = problem_of(client.post(CHAT, data=raw, headers=json_headers), 400)
        assert body["type"] == "/problems/malformed-json"
    for raw in ("[1, 2]", '"hi"', "42", "null", '[{"message": "hi"}]'):
        problem_of(client.post(CHAT, data=raw, headers=json_headers), 422)
    # No body at all is no request (it once read as "no fields").
    problem_of(client.post(CHAT, data="", headers=json_headers), 400)
    huge = json.dumps({"message": "x" * (1024 * 1024)})
    body = problem_of(client.post(CHAT, data=huge, headers=json_headers), 413)
    assert "bytes" in body["detail"]
    assert stored_counts(app) == (0, 0)


def test_credentials_and_scope(app, client, headers):
    problem_of(client.post(CHAT, json={"message": "hi"}), 401)
    problem_of(client.post(CHAT, json={"message": "hi"}, headers={"X-API-Key": "gaia_local_nonsense"}), 401)
    problem_of(client.post(CHAT, data="{", headers={"Content-Type": "application/json"}), 401)
    assets_only = headers(scopes=["assets"])
    body = problem_of(client.post(CHAT, json={"message": "hi"}, headers=assets_only), 403)
    assert body["type"] == "/problems/insufficient-scope"
    problem_of(client.post(CHAT, json={"message": "hi", "stream": True}, headers=assets_only), 403)
    assert chat(client, headers("bob@example.com", scopes=["chat"]))["response"]
    assert stored_counts(app) == (1, 2)


def test_limits_of_a_deployment(app, limited_app, headers):
    """CHAT_MAX_MESSAGE_CHARS=50 and CHAT_HISTORY_MESSAGES=2 (the newest two stored messages)."""
    client = limited_app.test_client()
    alice = headers()
    try:
        assert chat(client, alice, "x" * 50)["response"]
        before = stored_counts(app)
        body = problem_of(client.post(CHAT, json={"message": "x" * 51}, headers=alice), 422)
        assert "50" in body["detail"] and body["errors"][0]["field"] == "message"
        assert stored_counts(app) == before

        mu_prompt = system_prompt(app)
        first = chat(client, alice, "One")
        conversation_id = first["conversation_id"]
        second = chat(client, alice, "Two", conversation_id=conversation_id)
        assert second["response"] == expected(
            "One", ("assistant", first["response"]), "Two", system=mu_prompt).text
        third = chat(client, alice, "Three", conversation_id=conversation_id)
        want = expected("Two", ("assistant", second["response"]), "Three", system=mu_prompt)
        assert third["response"] == want.text
        assert third["usage"]["prompt_tokens"] == want.usage.prompt_tokens
        conversation = client.get(f"{CONVERSATIONS}/{conversation_id}", headers=alice).get_json()
        assert conversation["message_count"] == 6
    finally:
        gaia(limited_app).usage.discard_pending()


# -- cost -----------------------------------------------------------------------------------


def test_a_chat_on_a_long_conversation_costs_a_fixed_number_of_queries(app, backend, client, headers,
                                                                       count_queries):
    alice = headers()
    conversation_id = chat(client, alice, "Start")["conversation_id"]  # credentials cached from here on
    personas = gaia(app).services["chat.personas"]
    personas.clear()  # measured with the persona not cached (tests/test_persona_cache.py: cached)
    with count_queries() as short:
        chat(client, alice, "Next", conversation_id=conversation_id)
    for i in range(5):
        chat(client, alice, f"Turn {i}", conversation_id=conversation_id)
    personas.clear()
    with count_queries() as long:
        answer = chat(client, alice, "Last", conversation_id=conversation_id)
    assert answer["conversation_id"] == conversation_id
    # Credentials come from the cache; usage events and the key's last use are written later,
    # in batches. Then (blueprints/chat/store.py):
    # 1. the conversation joined to its last messages (owner check, its persona, the history);
    # 2. the persona (the conversation's, else the user's chosen one, else Mu);
    # 3. PostgreSQL: one statement updating the conversation and inserting both messages;
    #    SQLite: 3. UPDATE conversations, 4. INSERT both messages (one multi-row VALUES).
    want = {"postgresql": 3, "sqlite": 4}[backend]
    assert len(long) == len(short) == want, long.statements



def test_history_is_trimmed_to_the_context_window(app, client, headers):
    alice = headers()
    long_message = "word " * 2400  # 12000 characters: about 4000 tokens by Gaia's generous estimate
    first = chat(client, alice, long_message)
    assert first["usage"]["prompt_tokens"] == expected(long_message, system=system_prompt(app)).usage.prompt_tokens
    # gaia-local-mini has a 4096-token window: the long turn no longer fits, the newer answer does.
    second = chat(client, alice, "short", conversation_id=first["conversation_id"], model="gaia-local-mini")
    want = expected(("assistant", first["response"]), "short", system=system_prompt(app), model="gaia-local-mini")
    assert second["response"] == want.text
    assert second["usage"]["prompt_tokens"] == want.usage.prompt_tokens

    before = stored_counts(app)
    body = problem_of(client.post(CHAT, json={"message": "w " * 12000, "model": "gaia-local-mini"},
                                  headers=alice), 422)
    assert "context window" in body["detail"] and body["errors"][0]["field"] == "message"
    assert stored_counts(app) == before


# -- text every database stores; connections not held while a provider thinks ---------------


def test_a_nul_character_in_the_message_is_422_and_stores_nothing(app, client, headers, usage):
    alice = headers()
    for stream in (False, True):
        response = client.post(CHAT, json={"message": "hi\x00there", "stream": stream}, headers=alice)
        body = problem_of(response, 422)
        assert [e["field"] for e in body["errors"]] == ["message"]
    assert stored_counts(app) == (0, 0)


def test_a_lone_surrogate_in_the_message_is_422(app, client, headers):
    alice = {**headers(), "Content-Type": "application/json"}
    for stream in ("false", "true"):
        response = client.post(CHAT, data='{"message": "hi \\ud800 there", "stream": %s}' % stream, headers=alice)
        body = problem_of(response, 422)
        assert [e["field"] for e in body["errors"]] == ["message"]
    assert stored_counts(app) == (0, 0)


def test_no_database_connection_is_held_during_the_provider_call(app, client, headers, monkeypatch):
    alice = headers()
    local = gaia(app).providers.get("local")
    complete, stream = local.complete, local.stream
    held = []

    def spy_complete(request):
        held.append(db.engine.pool.checkedout())
        return complete(request)

    def spy_stream(request):
        held.append(db.engine.pool.checkedout())  # the relay's thread, while the view waits
        yield from stream(request)

    monkeypatch.setattr(local, "complete", spy_complete)
    monkeypatch.setattr(local, "stream", spy_stream)
    gaia(app).authenticator.cache.clear()
    chat(client, alice)  # credentials looked up in the database
    chat(client, alice)  # credentials cached
    gaia(app).authenticator.cache.clear()
    assert client.post(CHAT, json={"message": "hi", "stream": True}, headers=alice).status_code == 200
    assert held == [0, 0, 0]
