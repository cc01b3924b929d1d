"""Stored conversations over HTTP: ownership, paging, messages, deletion."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from gaia_app.extensions import db
from gaia_app.models import DEFAULT_PERSONA_ID, Conversation, Message, User
from tests.conftest import problem_of

CONVERSATIONS = "/api/v0.2/conversations"
PERSONAS = "/api/v0.2/personas"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def headers(make):
    def for_user(email="alice@example.com", **kwargs):
        return {"X-API-Key": make.key(email, **kwargs)}

    return for_user


def user_id(email="alice@example.com"):
    return db.session.execute(db.select(User.id).where(User.email == email)).scalar_one()


def add_conversations(app, email, count, title="chat"):
    """Conversations made a minute apart, oldest first; returns their ids."""
    with app.app_context():
        owner = user_id(email)
        rows = [
            Conversation(user_id=owner, title=f"{title} {i}", created_at=START + timedelta(minutes=i),
                         updated_at=START + timedelta(minutes=i))
            for i in range(count)
        ]
        db.session.add_all(rows)
        db.session.commit()
        return [str(row.id) for row in rows]


def add_messages(app, conversation_id, count):
    """Alternating user and assistant turns, a second apart; returns their ids in order."""
    with app.app_context():
        rows = []
        for i in range(count):
            answer = i % 2 == 1
            rows.append(Message(
                conversation_id=uuid.UUID(conversation_id),
                role="assistant" if answer else "user",
                content=f"turn {i}",
                provider="local" if answer else None,
                model="local/echo" if answer else None,
                prompt_tokens=10 + i if answer else None,
                completion_tokens=5 if answer else None,
                created_at=START + timedelta(seconds=i),
            ))
        db.session.add_all(rows)
        conversation = db.session.get(Conversation, uuid.UUID(conversation_id))
        conversation.message_count = count
        conversation.model = "local/echo"
        db.session.commit()
        return [str(row.id) for row in rows]


def test_create_and_read_an_empty_conversation(client, headers):
    alice = headers()
    response = client.post(CONVERSATIONS, json={"title": "  First steps "}, headers=alice)
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"].endswith(f"{CONVERSATIONS}/{created['id']}")
    assert created["title"] == "First steps" and created["message_count"] == 0
    assert created["persona_id"] == str(DEFAULT_PERSONA_ID) and created["model"] is None
    read = client.get(response.headers["Location"], headers=alice).get_json()
    assert read == {**created, "messages": [], "has_more": False}

    untitled = client.post(CONVERSATIONS, json={}, headers=alice).get_json()
    assert untitled["title"] == ""


def test_new_conversations_use_the_named_or_current_persona(client, headers):
    alice, bob = headers(), headers("bob@example.com")
    sage = client.post(PERSONAS, json={"name": "Sage", "system_prompt": "Be wise."}, headers=alice).get_json()
    named = client.post(CONVERSATIONS, json={"persona_id": sage["id"]}, headers=alice).get_json()
    assert named["persona_id"] == sage["id"]

    client.post(f"{PERSONAS}/set", json={"persona_id": sage["id"]}, headers=alice)
    assert client.post(CONVERSATIONS, json={}, headers=alice).get_json()["persona_id"] == sage["id"]
    explicit_null = client.post(CONVERSATIONS, json={"persona_id": None}, headers=alice).get_json()
    assert explicit_null["persona_id"] == sage["id"]

    for persona in (sage["id"], str(uuid.uuid4())):
        body = problem_of(client.post(CONVERSATIONS, json={"persona_id": persona}, headers=bob), 404)
        assert body["type"] == "/problems/not-found"

    # Deleting the persona keeps the conversation, without a persona.
    client.delete(f"{PERSONAS}/{sage['id']}", headers=alice)
    assert client.get(f"{CONVERSATIONS}/{named['id']}", headers=alice).get_json()["persona_id"] is None


def test_invalid_requests(client, headers):
    alice = headers()
    for payload, field in (
        ({"title": "x" * 201}, "title"),
        ({"title": 5}, "title"),
        ({"persona_id": "Mu"}, "persona_id"),
        ({"model": "gpt"}, "model"),
    ):
        body = problem_of(client.post(CONVERSATIONS, json=payload, headers=alice), 422)
        assert [e["field"] for e in body["errors"]] == [field]
    malformed = client.post(
        CONVERSATIONS, data="{", headers={**alice, "Content-Type": "application/json"}
    )
    assert problem_of(malformed, 400)["type"] == "/problems/malformed-json"
    for query in ("limit=0", "limit=201", "limit=x", "cursor=garbage"):
        problem_of(client.get(f"{CONVERSATIONS}?{query}", headers=alice), 422)
    created = client.post(CONVERSATIONS, json={}, headers=alice).get_json()
    for query in ("limit=0", "limit=501"):
        problem_of(client.get(f"{CONVERSATIONS}/{created['id']}?{query}", headers=alice), 422)


def test_credentials_and_scope(client, headers):
    problem_of(client.get(CONVERSATIONS), 401)
    problem_of(client.post(CONVERSATIONS, json={}), 401)
    assets_only = headers(scopes=["assets"])
    problem_of(client.get(CONVERSATIONS, headers=assets_only), 403)
    problem_of(client.post(CONVERSATIONS, json={}, headers=assets_only), 403)
    problem_of(client.get(f"{CONVERSATIONS}/{uuid.uuid4()}", headers=assets_only), 403)


def test_listing_pages_newest_first_and_only_your_own(app, client, headers):
    alice, bob = headers(), headers("bob@example.com")
    alices = add_conversations(app, "alice@example.com", 5)
    bobs = add_conversations(app, "bob@example.com", 2, title="bob")

    seen, cursor, pages = [], None, 0
    while True:
        url = f"{CONVERSATIONS}?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=alice).get_json()
        seen += [c["id"] for c in page["conversations"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == alices[::-1] and pages == 3

    whole = client.get(CONVERSATIONS, headers=alice).get_json()
    assert [c["id"] for c in whole["conversations"]] == alices[::-1] and whole["next_cursor"] is None
    assert set(whole["conversations"][0]) == {
        "id", "title", "persona_id", "model", "message_count", "created_at", "updated_at"
    }
    assert [c["id"] for c in client.get(CONVERSATIONS, headers=bob).get_json()["conversations"]] == bobs[::-1]
    fresh = headers("carol@example.com")
    assert client.get(CONVERSATIONS, headers=fresh).get_json() == {"conversations": [], "next_cursor": None}


def test_listing_costs_the_same_for_many_conversations(app, client, headers, count_queries):
    alice = headers()
    add_conversations(app, "alice@example.com", 1)
    client.get(CONVERSATIONS, headers=alice)  # credentials cached from here on
    with count_queries() as few:
        client.get(CONVERSATIONS, headers=alice)
    add_conversations(app, "alice@example.com", 30)
    with count_queries() as many:
        assert len(client.get(CONVERSATIONS, headers=alice).get_json()["conversations"]) == 31
    assert len(many) == len(few) <= 2


def test_reading_returns_the_latest_messages_in_order(app, client, headers):
    alice = headers()
    conversation = add_conversations(app, "alice@example.com", 1)[0]
    message_ids = add_messages(app, conversation, 7)
    url = f"{CONVERSATIONS}/{conversation}"

    whole = client.get(url, headers=alice).get_json()
    assert [m["id"] for m in whole["messages"]] == message_ids and whole["has_more"] is False
    assert whole["message_count"] == 7 and whole["model"] == "local/echo"
    question, answer = whole["messages"][0], whole["messages"][1]
    assert question["role"] == "user" and question["usage"] is None and question["provider"] is None
    assert answer == {
        "id": message_ids[1], "role": "assistant", "content": "turn 1", "provider": "local",
        "model": "local/echo", "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        "created_at": answer["created_at"],
    }

    latest = client.get(f"{url}?limit=3", headers=alice).get_json()
    assert [m["id"] for m in latest["messages"]] == message_ids[-3:] and latest["has_more"] is True
    assert [m["content"] for m in latest["messages"]] == ["turn 4", "turn 5", "turn 6"]
    exact = client.get(f"{url}?limit=7", headers=alice).get_json()
    assert len(exact["messages"]) == 7 and exact["has_more"] is False


def test_someone_elses_conversation_is_404(app, client, headers):
    alice, bob = headers(), headers("bob@example.com")
    conversation = add_conversations(app, "alice@example.com", 1)[0]
    add_messages(app, conversation, 2)
    for target in (conversation, str(uuid.uuid4())):
        for response in (
            client.get(f"{CONVERSATIONS}/{target}", headers=bob),
            client.delete(f"{CONVERSATIONS}/{target}", headers=bob),
        ):
            assert problem_of(response, 404)["type"] == "/problems/not-found"
    for malformed in ("not-a-uuid", "42"):
        problem_of(client.get(f"{CONVERSATIONS}/{malformed}", headers=alice), 404)
        problem_of(client.delete(f"{CONVERSATIONS}/{malformed}", headers=alice), 404)
    assert len(client.get(f"{CONVERSATIONS}/{conversation}", headers=alice).get_json()["messages"]) == 2


def test_delete_takes_the_messages_along(app, client, headers):
    alice = headers()
    doomed, kept = add_conversations(app, "alice@example.com", 2)
    add_messages(app, doomed, 4)
    add_messages(app, kept, 3)
    assert client.delete(f"{CONVERSATIONS}/{doomed}", headers=alice).status_code == 204
    problem_of(client.get(f"{CONVERSATIONS}/{doomed}", headers=alice), 404)
    problem_of(client.delete(f"{CONVERSATIONS}/{doomed}", headers=alice), 404)
    with app.app_context():
        left = db.session.execute(db.select(Message.conversation_id)).scalars().all()
    assert [str(c) for c in left] == [kept] * 3
    assert [c["id"] for c in client.get(CONVERSATIONS, headers=alice).get_json()["conversations"]] == [kept]
