"""Tools on Gaia's own chat API (`POST /api/v0.2/chat`), on SQLite and PostgreSQL: an NPC's
loop (a message, a tool call stored, its result sent back, an answer stored), streamed and
not, with `local` (deterministic tool choice) and the loopback OpenAI and Anthropic fakes;
`response_format`; persona actions on the chat API and on `/v1`; what is refused, and that
nothing is half-stored.
"""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest
from sqlalchemy import text

from blueprints.chat import chat as chat_service
from blueprints.chat.store import StoredTurn
from gaia_app.extensions import db
from gaia_app.models import DEFAULT_PERSONA_ID, Message, Persona
from gaia_app.providers import params
from gaia_app.providers.base import ChatMessage, ChatRequest, ProviderDeclaration
from gaia_app.providers.local import LocalProvider
from gaia_app.state import gaia
from tests.conftest import _reset, make_app, problem_of, upgrade
from tests.fakes.loopback import served
from tests.fakes.llm_servers import Behaviour, FakeAnthropic, FakeOpenAI
from tests.test_openai_compat import chat_calls, no_proxy, stream_events  # noqa: F401 - fixture

CHAT = "/api/v0.2/chat"
CONVERSATIONS = "/api/v0.2/conversations"
PERSONAS = "/api/v0.2/personas"
KEY_OAI, KEY_ANT = "sk-fake-openai", "sk-ant-fake"
GPT, CLAUDE = "gpt-4o-mini", "claude-haiku-4-5"
GATE_SCHEMA = {"type": "object", "properties": {"gate": {"type": "string"}}, "required": ["gate"]}
GATE = {"type": "function", "function": {"name": "open_gate", "description": "Open the castle gate",
                                         "parameters": GATE_SCHEMA}}
BELL = {"type": "function", "function": {"name": "ring_bell", "description": "Ring the bell",
                                         "parameters": {"type": "object", "properties": {"times": {"type": "integer"}}}}}
# The same name as GATE, said otherwise: a request's tool wins over a persona's action.
GATE_MINE = {"type": "function", "function": {"name": "open_gate", "description": "Lift the portcullis",
                                              "parameters": {"type": "object", "properties": {}}}}
NPC_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "level": {"type": "integer"}},
              "required": ["name", "level"], "additionalProperties": False}
ASK = "Open the north gate"
# (model, the fake behind it or None for local)
MODELS = [("local/gaia-local", None), (f"openai/{GPT}", "oai"), (f"anthropic/{CLAUDE}", "ant")]


# -- fixtures and helpers -------------------------------------------------------------------


oai = served(FakeOpenAI, models=(GPT,), api_key=KEY_OAI)
ant = served(FakeAnthropic, models=(CLAUDE,), api_key=KEY_ANT)


@pytest.fixture(scope="module")
def tools_app(no_proxy, oai, ant, database_url, tmp_path_factory):
    """This backend's database, with `local`, the OpenAI fake (the default) and the Anthropic one."""
    app = make_app(
        database_url, tmp_path_factory,
        OPENAI_API_KEY=KEY_OAI, OPENAI_BASE_URL=oai.url + "/v1",
        ANTHROPIC_API_KEY=KEY_ANT, ANTHROPIC_BASE_URL=ant.url,
        DEFAULT_LLM_PROVIDER="openai", DEFAULT_LLM_MODEL=GPT,
        LLM_CONNECT_TIMEOUT="1", LLM_READ_TIMEOUT="2", CHAT_STREAM_KEEPALIVE="0.2",
    )
    upgrade(app)
    gaia(app).providers.models()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(tools_app, oai, ant):
    oai.reset()
    ant.reset()
    gaia(tools_app).providers.clear_cooldowns()
    yield tools_app
    _reset(tools_app)


@pytest.fixture
def alice(make):
    return {"X-API-Key": make.key("alice@example.com")}


def fake_of(request, name):
    return request.getfixturevalue(name) if name else None


def post(client, auth, **body):
    return client.post(CHAT, json=body, headers=auth)


def ok(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def streamed(response) -> tuple[list[dict], dict]:
    """A chat stream's chunks and its last one (after which only `data: [DONE]`)."""
    assert response.status_code == 200 and response.mimetype == "text/event-stream", response.get_data(as_text=True)
    events = stream_events(response)
    assert events[-1] == (None, "[DONE]") and all(name is None for name, _ in events)
    chunks = [json.loads(data) for _, data in events[:-1]]
    return chunks, chunks[-1]


def answer_of(client, auth, stream: bool, **body) -> dict:
    """The answer as the non-streamed API gives it, from either form."""
    response = post(client, auth, stream=stream, **body)
    if not stream:
        return ok(response)
    chunks, last = streamed(response)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    found = {"response": "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks),
             "finish_reason": last["choices"][0]["finish_reason"], "conversation_id": last["conversation_id"]}
    deltas = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls") or ()]
    if "tool_calls" in last:
        # Whole calls in one OpenAI-shaped delta, and the same on the last chunk.
        assert [{"id": d["id"], "name": d["function"]["name"], "arguments": d["function"]["arguments"]}
                for d in deltas] == last["tool_calls"]
        assert [d["index"] for d in deltas] == list(range(len(deltas)))
        found["tool_calls"] = last["tool_calls"]
    else:
        assert deltas == []
    return found


def stored(app, conversation_id) -> list[dict]:
    with app.app_context():
        rows = db.session.execute(
            db.select(Message).where(Message.conversation_id == uuid.UUID(str(conversation_id)))
            .order_by(Message.created_at, Message.id)
        ).scalars().all()
        return [{"role": m.role, "content": m.content, "tool_calls": m.tool_calls, "tool_call_id": m.tool_call_id}
                for m in rows]


def counts(app) -> tuple[int, int]:
    with app.app_context(), db.engine.connect() as connection:
        return tuple(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()
                     for table in ("conversations", "messages"))


def results_for(answer: dict, content: str = "The north gate is open.") -> list[dict]:
    return [{"tool_call_id": call["id"], "content": content} for call in answer["tool_calls"]]


def calls_sent_to(fake) -> dict:
    return chat_calls(fake)[-1]["json"]


# -- the NPC loop -----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_local_npc_loop(app, client, alice, stream):
    first = answer_of(client, alice, stream, message=ASK, model="gaia-local", tools=[GATE, BELL])
    assert first["finish_reason"] == "tool_calls" and first["response"] == ""
    # What `local` answers to Mu's prompt, the message and the tools: exactly these calls.
    with app.app_context():
        mu = db.session.get(Persona, DEFAULT_PERSONA_ID)
        want = LocalProvider(ProviderDeclaration(id="local", kind="local", name="local")).complete(ChatRequest(
            model="gaia-local", messages=(ChatMessage("system", mu.system_prompt), ChatMessage("user", ASK)),
            options={"tools": [GATE, BELL]}))
    assert first["tool_calls"] == [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in want.tool_calls]
    assert [c["name"] for c in first["tool_calls"]] == ["open_gate"]
    jsonschema.validate(json.loads(first["tool_calls"][0]["arguments"]), GATE_SCHEMA)
    conversation_id = first["conversation_id"]
    assert stored(app, conversation_id) == [
        {"role": "user", "content": ASK, "tool_calls": None, "tool_call_id": None},
        {"role": "assistant", "content": "", "tool_calls": first["tool_calls"], "tool_call_id": None},
    ]

    second = answer_of(client, alice, stream, conversation_id=conversation_id, model="gaia-local",
                       tools=[GATE, BELL], tool_results=results_for(first))
    assert second["finish_reason"] == "stop" and "tool_calls" not in second
    # `local` names the result it was given, by the name of the call it answers.
    assert "open_gate returned: The north gate is open." in second["response"]
    assert stored(app, conversation_id)[2:] == [
        {"role": "tool", "content": "The north gate is open.", "tool_calls": None,
         "tool_call_id": first["tool_calls"][0]["id"]},
        {"role": "assistant", "content": second["response"], "tool_calls": None, "tool_call_id": None},
    ]
    shown = client.get(f"{CONVERSATIONS}/{conversation_id}", headers=alice).get_json()
    assert shown["message_count"] == 4
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert shown["messages"][1]["tool_calls"] == first["tool_calls"] and "tool_call_id" not in shown["messages"][1]
    assert shown["messages"][2]["tool_call_id"] == first["tool_calls"][0]["id"]
    assert "tool_calls" not in shown["messages"][2] and "tool_calls" not in shown["messages"][0]

    # Once answered, the same result again is refused, and nothing more is stored.
    before = counts(app)
    again = problem_of(post(client, alice, conversation_id=conversation_id, model="gaia-local",
                            tool_results=results_for(first), stream=stream), 422)
    assert again["errors"][0]["field"] == "tool_results[0].tool_call_id" and "already answered" in again["detail"]
    assert counts(app) == before


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model, fake_name", MODELS[1:], ids=["openai", "anthropic"])
def test_npc_loop_through_remote_providers(app, client, alice, request, model, fake_name, stream):
    fake = fake_of(request, fake_name)
    fake.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "north"})])
    first = answer_of(client, alice, stream, message=ASK, model=model, tools=[GATE])
    assert first["finish_reason"] == "tool_calls" and first["response"] == ""
    [call] = first["tool_calls"]
    assert call["name"] == "open_gate" and json.loads(call["arguments"]) == {"gate": "north"}
    sent = calls_sent_to(fake)
    if fake_name == "oai":
        assert sent["tools"] == [GATE] and sent["messages"][-1] == {"role": "user", "content": ASK}
    else:
        assert sent["tools"] == [{"name": "open_gate", "description": "Open the castle gate",
                                  "input_schema": GATE_SCHEMA}]

    fake.behaviour = Behaviour(reply="The gate creaks open.")
    conversation_id = first["conversation_id"]
    second = answer_of(client, alice, stream, conversation_id=conversation_id, model=model, tools=[GATE],
                       tool_results=results_for(first, "Opened."))
    assert second["response"] == "The gate creaks open." and second["finish_reason"] == "stop"
    # The history went back in the provider's terms (the fakes refuse results without their call).
    sent = calls_sent_to(fake)
    if fake_name == "oai":
        assert sent["messages"][-3:] == [
            {"role": "user", "content": ASK},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call["id"], "type": "function", "function": {"name": "open_gate", "arguments": call["arguments"]}}]},
            {"role": "tool", "tool_call_id": call["id"], "content": "Opened."},
        ]
    else:
        assert sent["messages"][-2:] == [
            {"role": "assistant", "content": [{"type": "tool_use", "id": call["id"], "name": "open_gate",
                                               "input": {"gate": "north"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "Opened."}]},
        ]
    assert [(m["role"], m["tool_call_id"]) for m in stored(app, conversation_id)] == [
        ("user", None), ("assistant", None), ("tool", call["id"]), ("assistant", None)]


def test_results_and_a_new_message_together(app, client, alice, oai):
    oai.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "north"}), ("ring_bell", {"times": 2})])
    first = ok(post(client, alice, message="Open the gate and ring the bell", tools=[GATE, BELL]))
    assert [c["name"] for c in first["tool_calls"]] == ["open_gate", "ring_bell"]
    conversation_id = first["conversation_id"]

    # Every call waiting must be answered before the conversation goes on.
    before = counts(app)
    for body in ({"message": "Well?"}, {"tool_results": results_for(first)[:1]}):
        problem = problem_of(post(client, alice, conversation_id=conversation_id, tools=[GATE, BELL], **body), 422)
        assert problem["errors"][0]["field"] == "tool_results" and first["tool_calls"][1]["id"] in problem["detail"]
    assert counts(app) == before

    oai.behaviour = Behaviour(reply="Done, and the bell rang twice.")
    results = [{"tool_call_id": first["tool_calls"][1]["id"], "content": "rang"},
               {"tool_call_id": first["tool_calls"][0]["id"], "content": "open"}]
    ok(post(client, alice, conversation_id=conversation_id, tools=[GATE, BELL], tool_results=results,
            message="Thanks!"))
    assert [(m["role"], m["content"]) for m in stored(app, conversation_id)[2:]] == [
        ("tool", "rang"), ("tool", "open"), ("user", "Thanks!"), ("assistant", "Done, and the bell rang twice.")]
    assert [m["role"] for m in calls_sent_to(oai)["messages"][-4:]] == ["assistant", "tool", "tool", "user"]


def test_response_format_json_schema(app, client, alice):
    shape = {"type": "json_schema", "json_schema": {"name": "npc", "schema": NPC_SCHEMA}}
    for stream in (False, True):
        answer = answer_of(client, alice, stream, message="Describe the guard Ada, level 3", model="gaia-local",
                           response_format=shape)
        jsonschema.validate(json.loads(answer["response"]), NPC_SCHEMA)
        assert stored(app, answer["conversation_id"])[1]["content"] == answer["response"]


# -- persona actions ------------------------------------------------------------------------


def keeper(client, auth, actions=(GATE, BELL)) -> dict:
    response = client.post(PERSONAS, json={"name": "Keeper", "system_prompt": "You are Keeper, the warden.",
                                           "actions": list(actions)}, headers=auth)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_persona_actions_apply_on_the_chat_api(app, client, alice, oai):
    persona = keeper(client, alice)
    assert persona["actions"] == [GATE, BELL]
    assert client.get(f"{PERSONAS}/{DEFAULT_PERSONA_ID}", headers=alice).get_json()["actions"] == []

    answer = ok(post(client, alice, message=ASK, model="gaia-local", persona_id=persona["id"]))
    assert [c["name"] for c in answer["tool_calls"]] == ["open_gate"]
    # The conversation keeps its persona, and so its actions.
    oai.behaviour = Behaviour(reply="Opened.")
    ok(post(client, alice, conversation_id=answer["conversation_id"], tool_results=results_for(answer)))
    assert calls_sent_to(oai)["tools"] == [GATE, BELL]
    # The request's own tools come first; on a name both use, the request's wins.
    ok(post(client, alice, message=ASK, persona_id=persona["id"], tools=[GATE_MINE], tool_choice="auto"))
    assert calls_sent_to(oai)["tools"] == [GATE_MINE, BELL] and calls_sent_to(oai)["tool_choice"] == "auto"
    # tool_choice may name an action.
    oai.behaviour = Behaviour()
    forced = ok(post(client, alice, message="hi", persona_id=persona["id"],
                     tool_choice={"type": "function", "function": {"name": "ring_bell"}}))
    assert [c["name"] for c in forced["tool_calls"]] == ["ring_bell"]

    # Changed, and cleared.
    changed = client.put(f"{PERSONAS}/{persona['id']}", json={"actions": [BELL]}, headers=alice)
    assert changed.status_code == 200 and changed.get_json()["actions"] == [BELL]
    ok(post(client, alice, message="hi", persona_id=persona["id"]))
    assert calls_sent_to(oai)["tools"] == [BELL]
    assert client.put(f"{PERSONAS}/{persona['id']}", json={"actions": []}, headers=alice).get_json()["actions"] == []
    ok(post(client, alice, message="hi", persona_id=persona["id"]))
    assert "tools" not in calls_sent_to(oai)


def test_persona_actions_apply_on_v1(app, client, alice, oai):
    keeper(client, alice)
    v1 = {"Authorization": "Bearer " + alice["X-API-Key"]}
    ask = [{"role": "user", "content": ASK}]
    oai.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "north"})])
    response = client.post("/v1/chat/completions", json={"model": "persona:Keeper", "messages": ask}, headers=v1)
    assert response.status_code == 200, response.get_data(as_text=True)
    message = response.get_json()["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "open_gate"
    assert calls_sent_to(oai)["tools"] == [GATE, BELL]

    body = {"model": "persona:keeper", "messages": ask, "tools": [GATE_MINE], "stream": True,
            "tool_choice": {"type": "function", "function": {"name": "ring_bell"}}}
    response = client.post("/v1/chat/completions", json=body, headers=v1)
    assert response.status_code == 200 and stream_events(response)[-1] == (None, "[DONE]")
    assert calls_sent_to(oai)["tools"] == [GATE_MINE, BELL]
    # The older `functions` get the actions as functions.
    legacy = {"model": "persona:Keeper", "messages": ask, "functions": [GATE_MINE["function"]]}
    assert client.post("/v1/chat/completions", json=legacy, headers=v1).status_code == 200
    assert calls_sent_to(oai)["functions"] == [GATE_MINE["function"], BELL["function"]]
    # Another model than a persona's gets no actions.
    plain = client.post("/v1/chat/completions", json={"model": GPT, "messages": ask}, headers=v1)
    assert plain.status_code == 200 and "tools" not in calls_sent_to(oai)


@pytest.mark.parametrize("actions, field", [
    ([{"type": "function", "function": {"name": "bad name"}}], "actions[0].function.name"),
    ([{"type": "function", "function": {"name": "x", "parameters": {"type": "nonsense"}}}],
     "actions[0].function.parameters"),
    ([GATE, GATE], "actions[1]"),
    ([{"type": "retrieval"}], "actions[0]"),
    ([{"type": "function", "function": {"name": f"t{i}"}} for i in range(129)], "actions"),
    ("open_gate", "actions"),
])
def test_invalid_actions_are_422(app, client, alice, actions, field):
    made = client.post(PERSONAS, json={"name": "Keeper", "system_prompt": "You keep.", "actions": actions},
                       headers=alice)
    assert problem_of(made, 422)["errors"][0]["field"] == field
    persona = keeper(client, alice, ())
    changed = client.put(f"{PERSONAS}/{persona['id']}", json={"actions": actions}, headers=alice)
    assert problem_of(changed, 422)["errors"][0]["field"] == field
    assert client.get(f"{PERSONAS}/{persona['id']}", headers=alice).get_json()["actions"] == []


# -- refused --------------------------------------------------------------------------------


MANY = [{"type": "function", "function": {"name": f"tool_{i}"}} for i in range(129)]


@pytest.mark.parametrize("body, field", [
    ({"tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "nonsense"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "two words"}}]}, "tools[0].function.name"),
    ({"tools": [GATE, GATE]}, "tools[1]"),
    ({"tools": MANY}, "tools"),
    ({"tools": "open_gate"}, "tools"),
    ({"tools": [GATE], "tool_choice": {"type": "function", "function": {"name": "ring_bell"}}}, "tool_choice"),
    ({"tools": [GATE], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"tools": [GATE], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "npc", "schema": {"type": "nonsense"}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": NPC_SCHEMA}}}, "response_format.json_schema"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"tool_results": [{"tool_call_id": "call_1", "content": "x"}]}, "conversation_id"),
    ({"tool_results": []}, "tool_results"),
    ({"tool_results": [{"tool_call_id": "", "content": "x"}]}, "tool_results.0.tool_call_id"),
    ({"tool_results": [{"content": "x"}]}, "tool_results.0.tool_call_id"),
    ({"tool_results": [{"tool_call_id": "call_1", "content": "x", "name": "y"}]}, "tool_results.0.name"),
])
def test_invalid_tool_requests_are_422_and_store_nothing(app, client, alice, body, field):
    body = {"message": ASK, "model": "gaia-local", **body}
    for stream in (False, True):
        problem = problem_of(post(client, alice, stream=stream, **body), 422)
        assert [e["field"] for e in problem["errors"]] == [field], problem
    assert counts(app) == (0, 0)


def test_too_many_tools_with_the_personas_actions(app, client, alice):
    persona = keeper(client, alice, [{"type": "function", "function": {"name": f"act_{i}"}} for i in range(100)])
    problem = problem_of(post(client, alice, message=ASK, model="gaia-local", persona_id=persona["id"],
                              tools=MANY[:29]), 422)
    assert problem["errors"][0]["field"] == "tools" and "128" in problem["detail"]
    assert ok(post(client, alice, message=ASK, model="gaia-local", persona_id=persona["id"], tools=MANY[:28]))
    assert counts(app) == (1, 2)


def test_tools_named_oddly_beside_actions_are_refused_not_failed(app, client, alice):
    persona = keeper(client, alice)
    odd = [{"type": "function", "function": {"name": ["open_gate"]}}]
    problem = problem_of(post(client, alice, message=ASK, model="gaia-local", persona_id=persona["id"], tools=odd), 422)
    assert problem["errors"][0]["field"] == "tools[0].function.name"
    v1 = {"Authorization": "Bearer " + alice["X-API-Key"]}
    for field in ("tools", "functions"):
        body = {"model": "persona:Keeper", "messages": [{"role": "user", "content": ASK}],
                field: odd if field == "tools" else [odd[0]["function"]]}
        response = client.post("/v1/chat/completions", json=body, headers=v1)
        assert response.status_code == 400 and response.get_json()["error"]["param"].startswith(field)
    assert counts(app) == (0, 0)


def test_results_that_answer_no_waiting_call(app, client, alice, make):
    first = ok(post(client, alice, message=ASK, model="gaia-local", tools=[GATE]))
    conversation_id = first["conversation_id"]
    call_id = first["tool_calls"][0]["id"]
    before = counts(app)
    cases = [
        ([{"tool_call_id": "call_nothing", "content": "x"}], "tool_results[0].tool_call_id", "matches no tool call"),
        ([{"tool_call_id": call_id, "content": "x"}, {"tool_call_id": call_id, "content": "y"}],
         "tool_results[1].tool_call_id", "answered twice"),
        ([{"tool_call_id": call_id, "content": "x" * 32_001}], "tool_results[0].content", "longer"),
    ]
    for results, field, said in cases:
        problem = problem_of(post(client, alice, conversation_id=conversation_id, model="gaia-local",
                                  tool_results=results), 422)
        assert problem["errors"][0]["field"] == field and said in problem["detail"]
    # Another user's conversation (or none) is not found, whatever the results.
    bob = {"X-API-Key": make.key("bob@example.com")}
    for target in (conversation_id, str(uuid.uuid4())):
        problem_of(post(client, bob, conversation_id=target, tool_results=[{"tool_call_id": call_id, "content": "x"}]),
                   404)
    assert counts(app) == before
    # A conversation that waits for nothing.
    plain = ok(post(client, alice, message="Hello", model="gaia-local"))
    problem = problem_of(post(client, alice, conversation_id=plain["conversation_id"], model="gaia-local",
                              tool_results=[{"tool_call_id": call_id, "content": "x"}]), 422)
    assert "no call is waiting" in problem["detail"]


def test_what_a_provider_cannot_take_is_refused_by_name(app, client, alice, monkeypatch):
    monkeypatch.setitem(params.PARAMETERS, "response_format", {"openai": params.FORWARD})
    problem = problem_of(post(client, alice, message=ASK, model="gaia-local",
                              response_format={"type": "json_object"}), 422)
    assert problem["errors"][0]["field"] == "response_format" and "'local'" in problem["detail"]
    monkeypatch.setitem(params.PARAMETERS, "tools", {"openai": params.FORWARD})
    first = ok(post(client, alice, message="hi", model="gaia-local"))
    problem = problem_of(post(client, alice, message=ASK, model="gaia-local", tools=[GATE]), 422)
    assert problem["errors"][0]["field"] == "tools"
    assert counts(app) == (1, 2) and first


# -- nothing half-stored ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_provider_failing_on_the_results_stores_nothing(app, client, alice, oai, stream):
    oai.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "north"})])
    first = ok(post(client, alice, message=ASK, tools=[GATE], fallback=False))
    again = {"conversation_id": first["conversation_id"], "tools": [GATE], "tool_results": results_for(first),
             "message": "And?"}
    before = counts(app)
    if stream:
        oai.behaviour = Behaviour(reply="The gate is", fail_after_chunks=2)
        events = stream_events(post(client, alice, stream=True, **again))
        assert [name for name, _ in events][-2:] == ["error", None]
    else:
        oai.behaviour = Behaviour(status=500)
        problem_of(post(client, alice, **again), 502)
    assert counts(app) == before
    # The calls still wait for their results, and are answered once.
    oai.behaviour = Behaviour(reply="It opens.")
    assert answer_of(client, alice, stream, **again)["response"] == "It opens."
    assert [m["role"] for m in stored(app, first["conversation_id"])] == ["user", "assistant", "tool", "user", "assistant"]


def test_results_given_twice_at_once_are_stored_once(app, client, alice, monkeypatch):
    first = ok(post(client, alice, message=ASK, model="gaia-local", tools=[GATE]))
    again = {"conversation_id": first["conversation_id"], "model": "gaia-local", "tools": [GATE],
             "tool_results": results_for(first)}
    local = gaia(app).providers.get("local")
    complete, meanwhile = local.complete, []

    def answered_meanwhile(request):
        if not meanwhile:  # while this answer is written, the same results arrive and are answered
            meanwhile.append(None)
            meanwhile.append(post(client, alice, **again))
        return complete(request)

    monkeypatch.setattr(local, "complete", answered_meanwhile)
    problem = problem_of(post(client, alice, **again), 409)
    assert "nothing was stored" in problem["detail"] and meanwhile[1].status_code == 200
    assert [m["role"] for m in stored(app, first["conversation_id"])] == ["user", "assistant", "tool", "assistant"]


# -- history --------------------------------------------------------------------------------


def test_history_never_starts_with_a_result_whose_call_was_left_out():
    call = {"id": "call_1", "name": "open_gate", "arguments": "{}"}
    history = [chat_service._turn(turn) for turn in (
        StoredTurn("user", "Open it"), StoredTurn("assistant", "", (call,)),
        StoredTurn("tool", "opened " * 50, tool_call_id="call_1"), StoredTurn("assistant", "Done."))]
    assert [t.wire["role"] for t in chat_service._fit_history(history, None)] == ["user", "assistant", "tool", "assistant"]
    assert history[1].wire == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "open_gate", "arguments": "{}"}}]}
    # Room for the last two only: the result goes with its call.
    room = history[2].tokens + history[3].tokens
    assert [t.wire["role"] for t in chat_service._fit_history(history, room)] == ["assistant"]
    assert [t.wire["role"] for t in chat_service._fit_history(history[2:], None)] == ["assistant"]
