"""Personas over HTTP: visibility, ownership, built-ins, validation, the current persona."""

import uuid

import pytest

from blueprints.chat import personas as persona_service
from gaia_app.extensions import db
from gaia_app.models import DEFAULT_PERSONA_ID, ApiKey, Persona, User
from tests.conftest import problem_of

PERSONAS = "/api/v0.2/personas"
MU = str(DEFAULT_PERSONA_ID)


@pytest.fixture
def headers(make):
    def for_user(email="alice@example.com", **kwargs):
        return {"X-API-Key": make.key(email, **kwargs)}

    return for_user


@pytest.fixture
def admin(make):
    make.user("root@example.com", admin=True)
    return {"X-API-Key": make.key("root@example.com", scopes=["chat", "admin"])}


@pytest.fixture
def built_in(app):
    """A built-in persona of this test only (the migration's Mu stays untouched)."""
    with app.app_context():
        persona = Persona(owner_id=None, name="Guide", system_prompt="You guide.", traits={})
        db.session.add(persona)
        db.session.commit()
        persona_id = persona.id
    yield str(persona_id)
    with app.app_context():
        db.session.execute(db.delete(Persona).where(Persona.id == persona_id))
        db.session.commit()


def new_persona(client, headers, name="Sage", **fields):
    body = {"name": name, "system_prompt": f"You are {name}.", **fields}
    response = client.post(PERSONAS, json=body, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_create_read_and_list(client, headers):
    alice = headers()
    response = client.post(
        PERSONAS,
        json={"name": "  Sage ", "system_prompt": "You are wise.", "description": "Old and calm",
              "traits": {"tone": "calm", "age": 900, "likes": ["tea"]}},
        headers=alice,
    )
    assert response.status_code == 201
    sage = response.get_json()
    assert response.headers["Location"].endswith(f"{PERSONAS}/{sage['id']}")
    assert sage["name"] == "Sage" and sage["system_prompt"] == "You are wise."
    assert sage["traits"] == {"tone": "calm", "age": 900, "likes": ["tea"]}
    assert sage["built_in"] is False and sage["is_default"] is False
    assert sage["created_at"] and sage["updated_at"]
    assert client.get(response.headers["Location"], headers=alice).get_json() == sage

    bare = new_persona(client, alice, "Bard")
    assert bare["description"] == "" and bare["traits"] == {}
    new_persona(client, headers("bob@example.com"), "Bob's own")

    listing = client.get(PERSONAS, headers=alice).get_json()
    assert [p["name"] for p in listing["personas"]] == ["Mu", "Sage", "Bard"]
    assert listing["total"] == 3
    mu = listing["personas"][0]
    assert mu["id"] == MU and mu["built_in"] is True and mu["is_default"] is True
    # Anyone reads a built-in persona.
    assert client.get(f"{PERSONAS}/{MU}", headers=headers("bob@example.com")).status_code == 200


def test_credentials_and_scope(client, headers):
    problem_of(client.get(PERSONAS), 401)
    problem_of(client.post(PERSONAS, json={"name": "x", "system_prompt": "y"}), 401)
    assets_only = headers(scopes=["assets"])
    for response in (
        client.get(PERSONAS, headers=assets_only),
        client.get(f"{PERSONAS}/current", headers=assets_only),
        client.post(PERSONAS, json={"name": "x", "system_prompt": "y"}, headers=assets_only),
        client.post(f"{PERSONAS}/set", json={"persona_id": MU}, headers=assets_only),
    ):
        problem_of(response, 403)


def test_someone_elses_persona_is_404_like_a_missing_one(client, headers):
    alice, bob = headers(), headers("bob@example.com")
    mine = new_persona(client, alice)
    missing = str(uuid.uuid4())
    for target in (mine["id"], missing):
        url = f"{PERSONAS}/{target}"
        for response in (
            client.get(url, headers=bob),
            client.put(url, json={"name": "Stolen"}, headers=bob),
            client.delete(url, headers=bob),
            client.post(f"{PERSONAS}/set", json={"persona_id": target}, headers=bob),
        ):
            assert problem_of(response, 404)["type"] == "/problems/not-found"
    for malformed in ("not-a-uuid", "123", MU + "0"):
        problem_of(client.get(f"{PERSONAS}/{malformed}", headers=bob), 404)
        problem_of(client.delete(f"{PERSONAS}/{malformed}", headers=bob), 404)
    # Alice's persona survived Bob's attempts, untouched.
    assert client.get(f"{PERSONAS}/{mine['id']}", headers=alice).get_json()["name"] == "Sage"


def test_invalid_bodies_are_422_with_field_errors(client, headers):
    alice = headers()
    good = {"name": "Sage", "system_prompt": "You are wise."}
    cases = [
        ({}, {"name", "system_prompt"}),
        ({"system_prompt": "x"}, {"name"}),
        ({**good, "name": ""}, {"name"}),
        ({**good, "name": "   "}, {"name"}),
        ({**good, "name": "x" * 101}, {"name"}),
        ({**good, "name": 7}, {"name"}),
        ({**good, "system_prompt": ""}, {"system_prompt"}),
        ({**good, "system_prompt": " \n "}, {"system_prompt"}),
        ({**good, "system_prompt": "x" * 16001}, {"system_prompt"}),
        ({**good, "system_prompt": None}, {"system_prompt"}),
        ({**good, "description": "x" * 2001}, {"description"}),
        ({**good, "traits": ["calm"]}, {"traits"}),
        ({**good, "traits": "calm"}, {"traits"}),
        ({**good, "traits": {f"k{i}": i for i in range(33)}}, {"traits"}),
        ({**good, "traits": {"story": "x" * 8200}}, {"traits"}),
        ({**good, "owner_id": str(uuid.uuid4())}, {"owner_id"}),
        ({**good, "is_default": True}, {"is_default"}),
    ]
    for payload, fields in cases:
        body = problem_of(client.post(PERSONAS, json=payload, headers=alice), 422)
        assert {e["field"] for e in body["errors"]} == fields, payload
    # The limits themselves are allowed.
    new_persona(client, alice, "x" * 100, system_prompt="y" * 16000,
                traits={f"k{i}": i for i in range(32)})
    assert client.get(PERSONAS, headers=alice).get_json()["total"] == 2


def test_malformed_json_is_400(client, headers):
    alice = headers()
    sent = {"headers": {**alice, "Content-Type": "application/json"}, "data": '{"name": "x",'}
    assert problem_of(client.post(PERSONAS, **sent), 400)["type"] == "/problems/malformed-json"
    assert problem_of(client.put(f"{PERSONAS}/{MU}", **sent), 400)["type"] == "/problems/malformed-json"
    problem_of(client.post(f"{PERSONAS}/set", **sent), 400)


def test_duplicate_names_conflict_only_among_your_own(client, headers):
    alice, bob = headers(), headers("bob@example.com")
    new_persona(client, alice, "Sage")
    body = problem_of(
        client.post(PERSONAS, json={"name": " SAGE ", "system_prompt": "x"}, headers=alice), 409
    )
    assert body["type"] == "/problems/conflict" and "Sage" in body["detail"]
    new_persona(client, bob, "sage")
    # A built-in's name is free for your own persona.
    new_persona(client, alice, "Mu")


def test_own_persona_cap(app, client, headers):
    alice = headers()
    with app.app_context():
        user_id = db.session.execute(db.select(ApiKey.user_id)).scalar_one()
        db.session.add_all(
            Persona(owner_id=user_id, name=f"p{i}", system_prompt="x")
            for i in range(persona_service.MAX_OWN_PERSONAS)
        )
        db.session.commit()
    body = problem_of(
        client.post(PERSONAS, json={"name": "one more", "system_prompt": "x"}, headers=alice), 409
    )
    assert "100" in body["detail"] and "delete" in body["detail"]
    assert client.get(PERSONAS, headers=alice).get_json()["total"] == 101


def test_partial_update(client, headers):
    alice = headers()
    sage = new_persona(client, alice, "Sage", traits={"tone": "calm"}, description="wise")
    other = new_persona(client, alice, "Bard")
    url = f"{PERSONAS}/{sage['id']}"

    changed = client.put(url, json={"system_prompt": "You are wiser."}, headers=alice)
    assert changed.status_code == 200
    view = changed.get_json()
    assert view["system_prompt"] == "You are wiser."
    assert (view["name"], view["description"], view["traits"]) == ("Sage", "wise", {"tone": "calm"})
    assert view["updated_at"] >= sage["updated_at"]

    view = client.put(url, json={"name": " SAGE ", "traits": {}}, headers=alice).get_json()
    assert view["name"] == "SAGE" and view["traits"] == {}
    assert client.get(url, headers=alice).get_json()["name"] == "SAGE"

    assert problem_of(client.put(url, json={"name": "bard"}, headers=alice), 409)["type"] == "/problems/conflict"
    problem_of(client.put(url, json={}, headers=alice), 422)
    problem_of(client.put(url, json={"name": ""}, headers=alice), 422)
    problem_of(client.put(url, json={"color": "red"}, headers=alice), 422)
    problem_of(client.put(url, json={"traits": {f"k{i}": 1 for i in range(33)}}, headers=alice), 422)
    assert client.get(f"{PERSONAS}/{other['id']}", headers=alice).get_json()["name"] == "Bard"


def test_built_ins_are_read_only_for_users(client, headers, built_in):
    alice = headers()
    for target in (MU, built_in):
        url = f"{PERSONAS}/{target}"
        body = problem_of(client.put(url, json={"name": "Mine"}, headers=alice), 403)
        assert body["type"] == "/problems/forbidden" and "built-in" in body["detail"]
        assert problem_of(client.delete(url, headers=alice), 403)["type"] == "/problems/forbidden"
    assert client.get(f"{PERSONAS}/{MU}", headers=alice).get_json()["name"] == "Mu"
    listing = client.get(PERSONAS, headers=alice).get_json()
    assert [p["name"] for p in listing["personas"]] == ["Mu", "Guide"]


def test_admins_edit_built_ins_but_never_delete_the_default(client, make, admin, built_in):
    url = f"{PERSONAS}/{built_in}"
    view = client.put(url, json={"description": "Shows the way", "traits": {"k": 1}}, headers=admin)
    assert view.status_code == 200
    assert view.get_json()["description"] == "Shows the way" and view.get_json()["built_in"] is True
    # Built-in names stay unique among built-ins.
    problem_of(client.put(url, json={"name": "mu"}, headers=admin), 409)

    chat_only = {"X-API-Key": make.key("root@example.com", scopes=["chat"])}
    problem_of(client.put(url, json={"description": "x"}, headers=chat_only), 403)

    body = problem_of(client.delete(f"{PERSONAS}/{MU}", headers=admin), 409)
    assert body["type"] == "/problems/conflict" and "default" in body["detail"]
    assert client.delete(url, headers=admin).status_code == 204
    problem_of(client.get(url, headers=admin), 404)


def test_current_persona_follows_the_choice_and_falls_back(client, headers):
    alice, bob = headers(), headers("bob@example.com")
    current = client.get(f"{PERSONAS}/current", headers=alice).get_json()
    assert current["source"] == "default" and current["persona"]["id"] == MU

    sage = new_persona(client, alice)
    chosen = client.post(f"{PERSONAS}/set", json={"persona_id": sage["id"]}, headers=alice)
    assert chosen.status_code == 200
    assert chosen.get_json() == {"persona": sage, "source": "preference"}
    assert client.get(f"{PERSONAS}/current", headers=alice).get_json()["persona"]["id"] == sage["id"]
    # Bob's current persona is his own business.
    assert client.get(f"{PERSONAS}/current", headers=bob).get_json()["source"] == "default"

    # Choosing again replaces the choice; a built-in persona can be chosen too.
    again = client.post(f"{PERSONAS}/set", json={"persona_id": MU}, headers=alice).get_json()
    assert again["source"] == "preference" and again["persona"]["id"] == MU
    client.post(f"{PERSONAS}/set", json={"persona_id": sage["id"]}, headers=alice)

    assert client.delete(f"{PERSONAS}/{sage['id']}", headers=alice).status_code == 204
    problem_of(client.get(f"{PERSONAS}/{sage['id']}", headers=alice), 404)
    current = client.get(f"{PERSONAS}/current", headers=alice).get_json()
    assert current["source"] == "default" and current["persona"]["id"] == MU

    problem_of(client.post(f"{PERSONAS}/set", json={}, headers=alice), 422)
    problem_of(client.post(f"{PERSONAS}/set", json={"persona_id": "Mu"}, headers=alice), 422)
    # The literal routes are not taken for persona ids.
    problem_of(client.put(f"{PERSONAS}/set", json={"name": "x"}, headers=alice), 405)
    problem_of(client.delete(f"{PERSONAS}/current", headers=alice), 405)


def test_find_persona_by_name_prefers_your_own(app, client, headers):
    own_mu = new_persona(client, headers(), "mu")
    headers("bob@example.com")
    with app.app_context():
        users = {u.email: u.id for u in db.session.execute(db.select(User)).scalars()}
        assert str(persona_service.find_persona_by_name(users["alice@example.com"], "MU").id) == own_mu["id"]
        assert persona_service.find_persona_by_name(users["bob@example.com"], " mU ").id == DEFAULT_PERSONA_ID
        assert persona_service.find_persona_by_name(users["bob@example.com"], "Sage") is None


def test_the_offline_provider_answers_as_the_chosen_persona(client, make):
    """With only the built-in provider, choosing a persona still shows in the answers."""
    key = {"X-API-Key": make.key()}
    first = client.post("/api/v0.2/chat", json={"message": "Who are you?"}, headers=key).get_json()
    assert first["response"].startswith("Mu here, a warm and curious companion")
    smith = client.post("/api/v0.2/personas", headers=key, json={
        "name": "Grimble", "system_prompt": "You are Grimble, a grumpy dwarven blacksmith. Be brief.",
    }).get_json()
    assert client.post("/api/v0.2/personas/set", json={"persona_id": smith["id"]}, headers=key).status_code == 200
    second = client.post("/api/v0.2/chat", json={"message": "Who are you?"}, headers=key).get_json()
    assert second["response"].startswith("Grimble here, a grumpy dwarven blacksmith.")
    assert second["persona_id"] == smith["id"]
