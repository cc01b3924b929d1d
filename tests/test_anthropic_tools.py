"""Tool calls, structured output and images through `/v1` to Anthropic (translated both ways,
streamed and not) and to OpenAI-kind providers (relayed), with the Flask test client and the
official `openai` SDK unchanged; and the loopback fakes checking what the real APIs check."""

from __future__ import annotations

import json

import openai
import pytest
import requests
from pydantic import BaseModel
from sqlalchemy import func, select

from gaia_app.extensions import db
from gaia_app.models import Conversation, UsageEvent
from gaia_app.providers.base import ChatMessage, ChatRequest
from gaia_app.state import gaia
from tests.conftest import make_app, upgrade
from tests.fakes.loopback import served
from tests.fakes.llm_servers import Behaviour, FakeAnthropic, FakeOpenAI, example_of
from tests.test_openai_compat import (  # noqa: F401 - fixtures
    auth,
    base_url,
    chat_calls,
    completions,
    key,
    no_proxy,
    openai_error_of,
    sdk,
    stream_events,
)

KEY_OAI = "sk-fake-openai"
KEY_ANT = "sk-ant-fake"
CLAUDE = "claude-haiku-4-5"
GPT = "gpt-4o-mini"
GATE_SCHEMA = {"type": "object", "properties": {"gate": {"type": "string"}}, "required": ["gate"]}
BELL_SCHEMA = {"type": "object", "properties": {"times": {"type": "integer"}}, "required": ["times"]}
GATE = {"type": "function", "function": {"name": "open_gate", "description": "Open the castle gate",
                                         "parameters": GATE_SCHEMA}}
BELL = {"type": "function", "function": {"name": "ring_bell", "parameters": BELL_SCHEMA}}
ASK = [{"role": "user", "content": "Open the north gate and ring the bell twice."}]
NPC_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "level": {"type": "integer"}},
              "required": ["name", "level"], "additionalProperties": False}
NPC_FORMAT = {"type": "json_schema", "json_schema": {"name": "npc", "schema": NPC_SCHEMA, "strict": True}}
PNG = "data:image/png;base64,iVBORw0KGgo="


class Npc(BaseModel):
    name: str
    level: int


class OpenGate(BaseModel):
    gate: str


class RingBell(BaseModel):
    times: int


oai = served(FakeOpenAI, models=(GPT,), api_key=KEY_OAI)
ant = served(FakeAnthropic, models=(CLAUDE,), api_key=KEY_ANT)


@pytest.fixture(scope="module")
def app(no_proxy, oai, ant, tmp_path_factory):
    app = make_app(
        f"sqlite:///{tmp_path_factory.mktemp('anthropic-tools') / 'x.db'}", tmp_path_factory,
        OPENAI_API_KEY=KEY_OAI, OPENAI_BASE_URL=oai.url + "/v1",
        ANTHROPIC_API_KEY=KEY_ANT, ANTHROPIC_BASE_URL=ant.url,
        DEFAULT_LLM_PROVIDER="anthropic", DEFAULT_LLM_MODEL=CLAUDE,
        LLM_CONNECT_TIMEOUT="1", LLM_READ_TIMEOUT="2",
    )
    upgrade(app)
    gaia(app).providers.models()
    return app


@pytest.fixture(autouse=True)
def _fresh(app, oai, ant):
    oai.reset()
    ant.reset()
    gaia(app).providers.clear_cooldowns()
    yield
    gaia(app).usage.discard_pending()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False
        yield session


def sent(fake, call: int = 0) -> dict:
    return chat_calls(fake)[call]["json"]


def chunks_of(response) -> list[dict]:
    events = stream_events(response)
    assert events[-1] == (None, "[DONE]") and [e for e in events if e[1] == "[DONE]"] == [events[-1]]
    return [json.loads(data) for name, data in events[:-1] if name is None]


def calls_of(chunks: list[dict]) -> dict[int, dict]:
    """The streamed tool calls by index: id, name, and the argument pieces as they came."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in (c["delta"] for c in chunk["choices"]):
            for piece in delta.get("tool_calls") or ():
                call = calls.setdefault(piece["index"], {"pieces": []})
                if "id" in piece:
                    assert "id" not in call and piece["type"] == "function" and piece["function"]["arguments"] == ""
                    call.update(id=piece["id"], name=piece["function"]["name"])
                else:
                    assert set(piece) == {"index", "function"} and set(piece["function"]) == {"arguments"}
                    call["pieces"].append(piece["function"]["arguments"])
    return calls


def content_of(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def usage_rows(app) -> list[tuple]:
    gaia(app).usage.flush()
    with app.app_context():
        rows = db.session.execute(select(UsageEvent).order_by(UsageEvent.created_at)).scalars().all()
        return [(row.provider, row.status, row.error_type) for row in rows]


# -- requests in Anthropic's terms -----------------------------------------------------------


@pytest.mark.parametrize("extra, tool_choice, called", [
    ({}, None, None),
    ({"tool_choice": "auto"}, {"type": "auto"}, None),
    ({"tool_choice": "none"}, {"type": "none"}, None),
    ({"tool_choice": "required"}, {"type": "any"}, "open_gate"),
    ({"tool_choice": {"type": "function", "function": {"name": "ring_bell"}}},
     {"type": "tool", "name": "ring_bell"}, "ring_bell"),
    ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}, None),
    ({"tool_choice": "required", "parallel_tool_calls": False},
     {"type": "any", "disable_parallel_tool_use": True}, "open_gate"),
], ids=["none-given", "auto", "none", "required", "named", "one-call", "required-one-call"])
def test_tools_and_tool_choice_reach_anthropic_in_its_terms(client, auth, ant, extra, tool_choice, called):
    response = completions(client, auth, model=CLAUDE, messages=ASK, tools=[GATE, BELL], **extra)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = sent(ant)
    assert body["tools"] == [
        {"name": "open_gate", "description": "Open the castle gate", "input_schema": GATE_SCHEMA},
        {"name": "ring_bell", "input_schema": BELL_SCHEMA}]
    assert body.get("tool_choice") == tool_choice
    assert not {"parallel_tool_calls", "functions", "function_call", "response_format"} & set(body)
    [choice] = response.get_json()["choices"]
    if called is None:
        assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    else:
        [call] = choice["message"]["tool_calls"]
        assert choice["finish_reason"] == "tool_calls" and call["function"]["name"] == called
        # The fake made the input from the tool's schema.
        schema = GATE_SCHEMA if called == "open_gate" else BELL_SCHEMA
        assert json.loads(call["function"]["arguments"]) == example_of(schema)


def test_a_tool_round_trip_not_streamed(client, auth, ant):
    ant.queue = [Behaviour(tool_calls=[("open_gate", {"gate": "north"})]),
                 Behaviour(reply="The north gate is open.")]
    first = completions(client, auth, model=CLAUDE, messages=ASK, tools=[GATE])
    assert first.status_code == 200, first.get_data(as_text=True)
    answer = first.get_json()
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert answer["model"] == CLAUDE and answer["usage"]["completion_tokens"] > 0
    [choice] = answer["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("toolu_") and call["type"] == "function"
    assert call["function"]["name"] == "open_gate" and json.loads(call["function"]["arguments"]) == {"gate": "north"}

    history = [*ASK, choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": "opened"}]
    second = completions(client, auth, model=CLAUDE, messages=history, tools=[GATE])
    assert second.status_code == 200, second.get_data(as_text=True)
    [choice] = second.get_json()["choices"]
    assert choice["message"]["content"] == "The north gate is open." and choice["finish_reason"] == "stop"
    assert sent(ant, 1)["messages"] == [
        {"role": "user", "content": ASK[0]["content"]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": call["id"], "name": "open_gate", "input": {"gate": "north"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "opened"}]},
    ]


def test_several_results_share_one_user_turn_and_keep_their_ids(client, auth, ant):
    history = [
        {"role": "system", "content": "You guard the castle."},
        *ASK,
        {"role": "assistant", "content": "Doing both.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "open_gate", "arguments": '{"gate": "north"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "ring_bell", "arguments": '{"times": 2}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "opened"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "rang"},
                                                               {"type": "text", "text": "twice"}]},
        {"role": "user", "content": "And now?"},
    ]
    response = completions(client, auth, model=CLAUDE, messages=history, tools=[GATE, BELL])
    assert response.status_code == 200, response.get_data(as_text=True)
    body = sent(ant)
    assert body["system"] == "You guard the castle."
    assert body["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Doing both."},
            {"type": "tool_use", "id": "call_a", "name": "open_gate", "input": {"gate": "north"}},
            {"type": "tool_use", "id": "call_b", "name": "ring_bell", "input": {"times": 2}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_a", "content": "opened"},
            {"type": "tool_result", "tool_use_id": "call_b", "content": [
                {"type": "text", "text": "rang"}, {"type": "text", "text": "twice"}]},
            {"type": "text", "text": "And now?"}]},
    ]


def test_tool_results_come_first_in_their_user_turn(client, auth, ant):
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "open_gate", "arguments": "{}"}}]},
        {"role": "user", "content": "Also, hurry."},
        {"role": "tool", "tool_call_id": "call_a", "content": "opened"}]
    response = completions(client, auth, model=CLAUDE, messages=history, tools=[GATE])
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sent(ant)["messages"][-1]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_a", "content": "opened"},
        {"type": "text", "text": "Also, hurry."}]


@pytest.mark.parametrize("usage", [False, True], ids=["no-usage-chunk", "usage-chunk"])
def test_streamed_tool_calls_keep_their_indexes_and_pieces(client, auth, ant, usage):
    calls = [("open_gate", {"gate": "north", "note": "quietly, please"}), ("ring_bell", {"times": 2})]
    ant.behaviour = Behaviour(reply="On it.", tool_calls=calls)
    extra = {"stream_options": {"include_usage": True}} if usage else {}
    response = completions(client, auth, model=CLAUDE, messages=ASK, tools=[GATE, BELL], stream=True, **extra)
    assert response.status_code == 200, response.get_data(as_text=True)
    chunks = chunks_of(response)
    assert len({c["id"] for c in chunks}) == 1 and {c["model"] for c in chunks} == {CLAUDE}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert content_of(chunks) == "On it."
    streamed = calls_of(chunks)
    assert sorted(streamed) == [0, 1]
    for index, (name, value) in enumerate(calls):
        assert streamed[index]["name"] == name and streamed[index]["id"].startswith("toolu_")
        assert len([p for p in streamed[index]["pieces"] if p]) > 1  # arguments in pieces
        assert json.loads("".join(streamed[index]["pieces"])) == value
    with_choices = [c for c in chunks if c["choices"]]
    finishes = [c["choices"][0]["finish_reason"] for c in with_choices]
    assert finishes[-1] == "tool_calls" and finishes[:-1] == [None] * (len(finishes) - 1)
    assert with_choices[-1]["choices"][0]["delta"] == {}
    if usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    else:
        assert chunks[-1] is with_choices[-1]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_legacy_functions_come_back_as_a_function_call(client, auth, ant, stream):
    ant.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "west"})])
    response = completions(client, auth, model=CLAUDE, messages=ASK, functions=[GATE["function"]],
                           function_call={"name": "open_gate"}, stream=stream)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sent(ant)["tool_choice"] == {"type": "tool", "name": "open_gate", "disable_parallel_tool_use": True}
    if not stream:
        [choice] = response.get_json()["choices"]
        call = choice["message"]["function_call"]
        assert choice["finish_reason"] == "function_call" and "tool_calls" not in choice["message"]
    else:
        chunks = chunks_of(response)
        deltas = [c["choices"][0]["delta"].get("function_call") for c in chunks]
        deltas = [d for d in deltas if d]
        call = {"name": deltas[0]["name"], "arguments": "".join(d["arguments"] for d in deltas)}
        assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"
    assert call["name"] == "open_gate" and json.loads(call["arguments"]) == {"gate": "west"}


def test_a_legacy_function_result_answers_its_call(app, ant):
    wire = ({"role": "user", "content": "open it"},
            {"role": "assistant", "content": None, "function_call": {"name": "open_gate", "arguments": "{}"}},
            {"role": "function", "name": "open_gate", "content": "opened"})
    request = ChatRequest(model=CLAUDE, messages=(ChatMessage("user", "open it"),), wire_messages=wire,
                          options={"functions": [GATE["function"]]})
    with app.app_context():
        completion = gaia(app).providers.get("anthropic").complete(request)
    assert completion.text.startswith("Hello from anthropic")
    [_, called, answered] = sent(ant)["messages"]
    [use] = called["content"]
    assert answered["content"] == [{"type": "tool_result", "tool_use_id": use["id"], "content": "opened"}]


def test_a_persona_s_name_is_the_model_of_relayed_chunks(client, auth, ant):
    ant.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "north"})])
    response = completions(client, auth, model="persona:Mu", messages=ASK, tools=[GATE], stream=True)
    chunks = chunks_of(response)
    assert {c["model"] for c in chunks} == {"persona:Mu"} and calls_of(chunks)[0]["name"] == "open_gate"
    assert sent(ant)["model"] == CLAUDE and "You are Mu" in sent(ant)["system"]


# -- structured output, by a forced tool -------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_json_schema_answer_comes_back_as_content(client, auth, ant, stream):
    ant.behaviour = Behaviour(tool_calls=[("npc", {"name": "Mu", "level": 3})])
    response = completions(client, auth, model=CLAUDE, messages=ASK, response_format=NPC_FORMAT, stream=stream)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = sent(ant)
    assert body["tools"] == [{"name": "npc", "description": "Give the answer as npc.", "input_schema": NPC_SCHEMA}]
    assert body["tool_choice"] == {"type": "tool", "name": "npc", "disable_parallel_tool_use": True}
    assert "response_format" not in body
    if stream:
        chunks = chunks_of(response)
        pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
        assert len([p for p in pieces if p]) > 1 and not calls_of(chunks)
        content, finish = content_of(chunks), chunks[-1]["choices"][0]["finish_reason"]
    else:
        [choice] = response.get_json()["choices"]
        assert "tool_calls" not in choice["message"]
        content, finish = choice["message"]["content"], choice["finish_reason"]
    assert json.loads(content) == {"name": "Mu", "level": 3} and finish == "stop"


def test_a_json_object_answer_and_a_format_beside_tools(client, auth, ant):
    ant.behaviour = Behaviour(tool_calls=[("json_object", {"gate": "north"})])
    response = completions(client, auth, model=CLAUDE, messages=ASK, response_format={"type": "json_object"})
    assert json.loads(response.get_json()["choices"][0]["message"]["content"]) == {"gate": "north"}
    assert sent(ant)["tools"][0]["input_schema"] == {"type": "object"}

    # Beside the client's own tools: some tool must be used, the answer's or one of theirs.
    ant.behaviour = Behaviour()
    response = completions(client, auth, model=CLAUDE, messages=ASK, tools=[GATE], response_format=NPC_FORMAT)
    body = sent(ant, 1)
    assert [t["name"] for t in body["tools"]] == ["open_gate", "npc"] and body["tool_choice"] == {"type": "any"}
    [choice] = response.get_json()["choices"]
    assert choice["finish_reason"] == "tool_calls"  # the fake took the first tool


def test_a_format_named_like_a_tool_is_refused_by_name(client, auth, ant):
    tool = {"type": "function", "function": {"name": "npc", "parameters": NPC_SCHEMA}}
    error = openai_error_of(completions(client, auth, model=CLAUDE, tools=[tool], response_format=NPC_FORMAT), 400)
    assert error["param"] == "response_format.json_schema.name" and chat_calls(ant) == []


# -- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_image_parts_become_image_blocks(client, auth, ant, stream):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is on"},
        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
        {"type": "text", "text": "and on"},
        {"type": "image_url", "image_url": {"url": "https://example.com/gate.png"}}]}]
    response = completions(client, auth, model=CLAUDE, messages=messages, stream=stream)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sent(ant)["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is on"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "text", "text": "and on"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/gate.png"}}]}]


def test_an_image_type_anthropic_cannot_read_is_refused_by_name(client, auth, ant):
    messages = [{"role": "user", "content": [{"type": "text", "text": "look"}, {
        "type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}}]}]
    error = openai_error_of(completions(client, auth, model=CLAUDE, messages=messages), 400)
    assert error["param"] == "messages[0].content[1].image_url.url" and "svg" in error["message"]
    assert chat_calls(ant) == []


# -- what goes wrong ---------------------------------------------------------------------------


@pytest.mark.parametrize("arguments", ["{gate: north", "[1, 2]", ""], ids=["not-json", "not-an-object", "empty"])
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_arguments_that_are_not_a_json_object_are_a_400_naming_them(client, auth, ant, arguments, stream):
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "open_gate", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "opened"}]
    error = openai_error_of(completions(client, auth, model=CLAUDE, messages=history, tools=[GATE], stream=stream), 400)
    assert error["param"] == "messages[1].tool_calls[0].function.arguments"
    assert chat_calls(ant) == []


def test_a_result_for_no_call_is_a_400_before_any_provider(client, auth, ant):
    history = [*ASK, {"role": "tool", "tool_call_id": "call_nowhere", "content": "opened"}]
    error = openai_error_of(completions(client, auth, model=CLAUDE, messages=history, tools=[GATE]), 400)
    assert error["param"] == "messages[1].tool_call_id" and chat_calls(ant) == []


def test_anthropic_s_own_refusal_of_a_tool_reaches_the_client(client, auth, ant):
    tool = {"type": "function", "function": {"name": "shout", "parameters": {"type": "string"}}}
    error = openai_error_of(completions(client, auth, model=CLAUDE, tools=[tool]), 400)
    assert "input_schema.type" in error["message"] and len(chat_calls(ant)) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_tool_input_that_is_not_an_object_is_a_clear_error(app, client, auth, ant, stream):
    ant.behaviour = Behaviour(tool_calls=[("open_gate", ["north"])])
    response = completions(client, auth, model=CLAUDE, messages=ASK, tools=[GATE], stream=stream)
    if not stream:
        error = openai_error_of(response, 502)
        assert "open_gate" in error["message"] and "not a JSON object" in error["message"]
    else:
        assert response.status_code == 200
        events = stream_events(response)
        [error] = [json.loads(data)["error"] for name, data in events if name == "error"]
        assert error["type"] == "bad_response" and "not a JSON object" in error["message"]
        chunks = [json.loads(data) for name, data in events[:-1] if name is None]
        assert calls_of(chunks)[0]["name"] == "open_gate"  # it had begun
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks)  # never finished
    assert usage_rows(app)[-1] == ("anthropic", "error", "bad_response")


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_bad_tool_input_leaves_no_conversation_behind(app, client, auth, ant, stream):
    def conversations() -> int:
        with app.app_context():
            return db.session.execute(select(func.count()).select_from(Conversation)).scalar_one()

    before = conversations()
    ant.behaviour = Behaviour(reply="Sure.", tool_calls=[("open_gate", "north")])
    response = client.post("/api/v0.2/chat", headers=auth, json={
        "message": "open it", "provider": "anthropic", "model": CLAUDE, "stream": stream})
    assert response.status_code == (200 if stream else 502), response.get_data(as_text=True)
    if stream:
        assert "not a JSON object" in response.get_data(as_text=True)
    assert conversations() == before


# -- capabilities ------------------------------------------------------------------------------


def test_anthropic_models_advertise_vision_tools_and_json_schema(client, auth):
    models = client.get("/api/v0.2/providers/anthropic/models", headers=auth).get_json()["models"]
    assert models and all({"vision", "tools", "json_schema"} <= set(m["capabilities"]) for m in models)
    openai_models = client.get("/api/v0.2/providers/openai/models", headers=auth).get_json()["models"]
    assert openai_models and all("tools" not in m["capabilities"] for m in openai_models)


def test_plain_text_still_goes_as_plain_text(client, auth, ant):
    response = completions(client, auth, model=CLAUDE, messages=[{"role": "user", "content": "hi there"}])
    assert sent(ant)["messages"] == [{"role": "user", "content": "hi there"}] and "tools" not in sent(ant)
    body = response.get_json()
    assert body["choices"][0]["message"] == {
        "role": "assistant", "content": "Hello from anthropic. You said: hi there", "refusal": None}


# -- the official SDK, through Anthropic -------------------------------------------------------


def test_sdk_tool_round_trip_through_anthropic(sdk, ant):
    ant.queue = [Behaviour(tool_calls=[("open_gate", {"gate": "north"}), ("ring_bell", {"times": 2})]),
                 Behaviour(reply="Both done.")]
    first = sdk.chat.completions.create(model=CLAUDE, messages=ASK, tools=[GATE, BELL])
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("open_gate", {"gate": "north"}), ("ring_bell", {"times": 2})]
    history = [*ASK, message.model_dump(exclude_none=True),
               *({"role": "tool", "tool_call_id": c.id, "content": "done"} for c in message.tool_calls)]
    second = sdk.chat.completions.create(model=CLAUDE, messages=history, tools=[GATE, BELL])
    assert second.choices[0].message.content == "Both done."
    results = sent(ant, 1)["messages"][-1]["content"]
    assert [r["tool_use_id"] for r in results] == [c.id for c in message.tool_calls]


def test_sdk_reassembles_streamed_tool_calls_from_anthropic(sdk, ant):
    ant.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "north"}), ("ring_bell", {"times": 2})])
    tools = [openai.pydantic_function_tool(OpenGate, name="open_gate"),
             openai.pydantic_function_tool(RingBell, name="ring_bell")]
    with sdk.chat.completions.stream(model=CLAUDE, messages=ASK, tools=tools) as stream:
        pieces = [event.arguments_delta for event in stream if event.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.parsed_arguments for c in calls] == [OpenGate(gate="north"), RingBell(times=2)]
    assert all(c.id.startswith("toolu_") for c in calls) and final.choices[0].finish_reason == "tool_calls"
    assert len([p for p in pieces if p]) > len(calls)


@pytest.mark.parametrize("stream", [False, True], ids=["parse", "stream"])
def test_sdk_parses_a_pydantic_answer_through_anthropic(sdk, ant, stream):
    ant.behaviour = Behaviour(tool_calls=[("Npc", {"name": "Mu", "level": 3})])
    if stream:
        with sdk.chat.completions.stream(model=CLAUDE, messages=ASK, response_format=Npc) as events:
            completion = events.get_final_completion()
    else:
        completion = sdk.chat.completions.parse(model=CLAUDE, messages=ASK, response_format=Npc)
    assert completion.choices[0].message.parsed == Npc(name="Mu", level=3)
    [tool] = sent(ant)["tools"]
    assert tool["name"] == "Npc" and tool["input_schema"]["properties"].keys() == {"name", "level"}
    assert sent(ant)["tool_choice"]["name"] == "Npc"


def test_sdk_parse_without_a_scripted_answer_fits_the_schema(sdk, ant):
    completion = sdk.chat.completions.parse(model=CLAUDE, messages=ASK, response_format=Npc)
    assert isinstance(completion.choices[0].message.parsed, Npc)


def test_sdk_image_parts_reach_anthropic(sdk, ant):
    sdk.chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Which gate?"},
        {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/gate.png"}}]}])
    blocks = sent(ant)["messages"][0]["content"]
    assert [b["type"] for b in blocks] == ["text", "image", "image"]
    assert blocks[1]["source"]["type"] == "base64" and blocks[2]["source"]["type"] == "url"


def test_sdk_bad_arguments_are_a_bad_request_naming_them(sdk, ant):
    history = [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "open_gate", "arguments": "north"}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": "opened"}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model=CLAUDE, messages=history, tools=[GATE])
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"
    assert chat_calls(ant) == []


# -- the official SDK, through an OpenAI-kind provider (relayed) -------------------------------


def test_sdk_tool_round_trip_through_openai(sdk, oai):
    oai.queue = [Behaviour(tool_calls=[("open_gate", {"gate": "north"})]), Behaviour(reply="Open.")]
    first = sdk.chat.completions.create(model=GPT, messages=ASK, tools=[GATE])
    message = first.choices[0].message
    [call] = message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and message.content is None
    assert call.id.startswith("call_") and json.loads(call.function.arguments) == {"gate": "north"}
    history = [*ASK, message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "ok"}]
    assert sdk.chat.completions.create(model=GPT, messages=history, tools=[GATE]).choices[0].message.content == "Open."
    assert sent(oai, 1)["messages"][1]["tool_calls"][0]["id"] == call.id


def test_sdk_reassembles_streamed_tool_calls_through_openai(sdk, oai):
    oai.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "north"}), ("ring_bell", {"times": 2})])
    tools = [openai.pydantic_function_tool(OpenGate, name="open_gate"),
             openai.pydantic_function_tool(RingBell, name="ring_bell")]
    with sdk.chat.completions.stream(model=GPT, messages=ASK, tools=tools) as stream:
        pieces = [event.arguments_delta for event in stream if event.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert [c.function.parsed_arguments for c in calls] == [OpenGate(gate="north"), RingBell(times=2)]
    assert len(pieces) > len(calls) and final.choices[0].finish_reason == "tool_calls"


def test_sdk_parses_a_json_schema_answer_through_openai(sdk, oai):
    oai.behaviour = Behaviour(reply='{"name": "Mu", "level": 3}')
    completion = sdk.chat.completions.parse(model=GPT, messages=ASK, response_format=Npc)
    assert completion.choices[0].message.parsed == Npc(name="Mu", level=3)
    assert sent(oai)["response_format"]["json_schema"]["name"] == "Npc"


# -- the fakes check what the real APIs check --------------------------------------------------


def _messages(http, ant, **body):
    body = {"model": CLAUDE, "max_tokens": 50, "messages": ASK, **body}
    return http.post(ant.url + "/v1/messages", json=body, timeout=5,
                     headers={"x-api-key": KEY_ANT, "anthropic-version": "2023-06-01"})


USE = {"type": "tool_use", "id": "toolu_1", "name": "open_gate", "input": {"gate": "north"}}


@pytest.mark.parametrize("body, found", [
    ({"tools": [{"name": "open_gate", "input_schema": {"type": "string"}}]}, "input_schema.type"),
    ({"tools": [{"name": "open gate", "input_schema": GATE_SCHEMA}]}, "tools.0.custom.name"),
    ({"tools": [{"name": "a", "input_schema": GATE_SCHEMA}] * 2}, "unique"),
    ({"tool_choice": {"type": "any"}}, "while providing tools"),
    ({"tools": [{"name": "a", "input_schema": GATE_SCHEMA}], "tool_choice": {"type": "tool", "name": "b"}},
     "not found"),
    ({"messages": [*ASK, {"role": "assistant", "content": [USE]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]}]},
     "unexpected `tool_use_id`"),
    ({"messages": [*ASK, {"role": "assistant", "content": [USE]}, {"role": "user", "content": "well?"}]},
     "without `tool_result` blocks"),
    ({"messages": [*ASK, {"role": "assistant", "content": [{**USE, "input": "north"}]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}]},
     "valid dictionary"),
    ({"messages": [{"role": "user", "content": [USE]}]}, "messages.0.content.0"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/svg+xml", "data": "PHN2Zz4="}}]}]}, "media_type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "not base64!"}}]}]}, "base64"),
], ids=["schema-not-object", "bad-name", "twice", "choice-without-tools", "choice-unknown",
        "result-for-no-use", "use-without-result", "input-not-object", "use-in-user-turn", "svg", "bad-base64"])
def test_fake_anthropic_refuses_what_the_api_refuses(http, ant, body, found):
    response = _messages(http, ant, **body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and found in error["message"]


def test_fake_anthropic_streams_tool_use_blocks(http, ant):
    ant.behaviour = Behaviour(tool_calls=[("open_gate", {"gate": "north"})])
    response = _messages(http, ant, stream=True, tools=[{"name": "open_gate", "input_schema": GATE_SCHEMA}])
    events = [json.loads(block.split("data: ", 1)[1]) for block in response.text.split("\n\n") if "data: " in block]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == ["message_delta", "message_stop"]
    start = events[2]
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    pieces = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert len(pieces) > 2 and json.loads("".join(pieces)) == {"gate": "north"}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_fake_openai_refuses_a_result_for_no_call(http, oai):
    response = http.post(oai.url + "/v1/chat/completions", timeout=5, headers={"Authorization": f"Bearer {KEY_OAI}"},
                         json={"model": GPT, "messages": [*ASK, {"role": "tool", "tool_call_id": "x", "content": "y"}]})
    assert response.status_code == 400 and "role 'tool'" in response.json()["error"]["message"]


def test_fake_openai_answers_a_forced_tool_from_its_schema(http, oai):
    body = {"model": GPT, "messages": ASK, "tools": [GATE, BELL],
            "tool_choice": {"type": "function", "function": {"name": "ring_bell"}}}
    response = http.post(oai.url + "/v1/chat/completions", json=body, timeout=5,
                         headers={"Authorization": f"Bearer {KEY_OAI}"})
    [choice] = response.json()["choices"]
    [call] = choice["message"]["tool_calls"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert call["function"]["name"] == "ring_bell" and json.loads(call["function"]["arguments"]) == {"times": 1}
