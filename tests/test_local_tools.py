"""The built-in `local` provider calls tools and answers in JSON, by rule and repeatably.

Through `/v1/chat/completions` (Flask's test client and the official `openai` SDK, unchanged):
a whole tool loop, every `tool_choice` form, parallel calls, streamed calls the SDK puts back
together, `parse()` with a pydantic model, JSON mode, the older `functions`, determinism, and
arguments valid for their schema, hypothesis-made schemas included.
"""

from __future__ import annotations

import json
import random
from typing import Literal, Optional

import openai
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from gaia_app.providers.base import ChatMessage, ChatRequest, ProviderDeclaration
from gaia_app.providers.json_values import value_for
from gaia_app.providers.local import LocalProvider
from gaia_app.providers.local_words import Vocabulary
from gaia_app.state import gaia
from tests.conftest import make_app, upgrade
from tests.test_openai_compat import (  # noqa: F401 - fixtures
    _key,
    base_url,
    completions,
    key,
    no_proxy,
    sdk,
    stream_events,
)

MODEL = "gaia-local"


def _tool(name: str, description: str, properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties,
                       "required": list(properties) if required is None else required}}}


WEATHER = _tool("get_weather", "Current weather for a city", {
    "city": {"type": "string", "description": "The city"},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7},
}, required=["city", "unit"])
CLOCK = _tool("get_time", "The local time in a city", {"city": {"type": "string"}})
GATE = _tool("openGate", "Open one of the castle gates", {
    "gate": {"type": "string", "description": "which gate"},
    "until": {"type": "string", "format": "date"},
    "guards": {"type": "integer", "minimum": 0, "multipleOf": 2},
})
TOOLS = [WEATHER, CLOCK, GATE]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris for 3 days?"}]
ASK_BOTH = [{"role": "user", "content": "What is the weather in Paris and the time in Tokyo?"}]
ASK_NOTHING = [{"role": "user", "content": "Sing me a song about the sea."}]


@pytest.fixture(scope="module")
def app(no_proxy, tmp_path_factory):
    app = make_app(f"sqlite:///{tmp_path_factory.mktemp('local-tools') / 'x.db'}", tmp_path_factory)
    gaia(app).usage.background = False
    upgrade(app)
    return app


@pytest.fixture(scope="module")
def auth(app):
    return {"Authorization": f"Bearer {_key(app)}"}


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def ask(client, auth, messages, **changes) -> dict:
    response = completions(client, auth, model=MODEL, messages=messages, **changes)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def calls_of(body: dict, choice: int = 0) -> list[dict]:
    return body["choices"][choice]["message"].get("tool_calls") or []


def schema_of(tools: list[dict], name: str) -> dict:
    return next(t["function"]["parameters"] for t in tools if t["function"]["name"] == name)


def assert_valid(value, schema) -> None:
    Draft202012Validator(schema, format_checker=FormatChecker()).validate(value)


# -- calls, and a whole loop --------------------------------------------------------------


def test_a_tool_loop_ends_in_a_text_answer_that_names_the_result(client, auth):
    first = ask(client, auth, ASK_WEATHER, tools=TOOLS)
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    [call] = calls_of(first)
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert_valid(arguments, schema_of(TOOLS, "get_weather"))
    # Taken from the message: the city it names, the number of days it asks for.
    assert arguments["city"] == "Paris" and arguments["days"] == 3

    loop = ASK_WEATHER + [choice["message"],
                          {"role": "tool", "tool_call_id": call["id"], "content": "18 degrees and sunny"}]
    second = ask(client, auth, loop, tools=TOOLS)
    answer = second["choices"][0]
    assert answer["finish_reason"] == "stop" and not answer["message"].get("tool_calls")
    assert "get_weather returned: 18 degrees and sunny." in answer["message"]["content"]
    assert second["usage"]["completion_tokens"] > 0


def test_a_tool_loop_with_the_sdk(sdk):
    completion = sdk.chat.completions.create(model=MODEL, messages=ASK_WEATHER, tools=TOOLS)
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    [call] = message.tool_calls
    assert call.function.name == "get_weather"
    result = {"role": "tool", "tool_call_id": call.id, "content": "rain"}
    follow = sdk.chat.completions.create(model=MODEL, tools=TOOLS,
                                         messages=[*ASK_WEATHER, message.model_dump(exclude_none=True), result])
    assert follow.choices[0].message.tool_calls is None
    assert "get_weather returned: rain." in follow.choices[0].message.content


@pytest.mark.parametrize("messages, tool_choice, called", [
    (ASK_WEATHER, None, ["get_weather"]),
    (ASK_WEATHER, "auto", ["get_weather"]),
    (ASK_WEATHER, "none", []),
    (ASK_NOTHING, "auto", []),  # nothing in common: text
    (ASK_NOTHING, "required", ["get_weather"]),  # a tie at 0: the first declared
    (ASK_WEATHER, {"type": "function", "function": {"name": "openGate"}}, ["openGate"]),
])
def test_tool_choice_decides_whether_and_which(client, auth, messages, tool_choice, called):
    extra = {} if tool_choice is None else {"tool_choice": tool_choice}
    body = ask(client, auth, messages, tools=TOOLS, **extra)
    calls = calls_of(body)
    assert [c["function"]["name"] for c in calls] == called
    choice = body["choices"][0]
    if called:
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        for call in calls:
            assert_valid(json.loads(call["function"]["arguments"]), schema_of(TOOLS, call["function"]["name"]))
    else:
        assert choice["finish_reason"] == "stop" and choice["message"]["content"]


def test_parallel_calls_take_every_matching_tool_or_only_the_best(client, auth):
    both = calls_of(ask(client, auth, ASK_BOTH, tools=TOOLS))
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])["city"]) for c in both] == [
        ("get_weather", "Paris"), ("get_time", "Tokyo")]
    assert len({c["id"] for c in both}) == 2
    one = calls_of(ask(client, auth, ASK_BOTH, tools=TOOLS, parallel_tool_calls=False))
    # The two tie; the first declared wins.
    assert [c["function"]["name"] for c in one] == ["get_weather"]
    # A named tool is one call, whatever else matches.
    named = calls_of(ask(client, auth, ASK_BOTH, tools=TOOLS,
                         tool_choice={"type": "function", "function": {"name": "get_time"}}))
    assert [c["function"]["name"] for c in named] == ["get_time"]


def test_every_choice_calls_and_ids_are_its_own(client, auth):
    body = ask(client, auth, ASK_WEATHER, tools=TOOLS, n=3)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    ids = [call["id"] for index in range(3) for call in calls_of(body, index)]
    assert len(ids) == 3 == len(set(ids))
    assert {c["finish_reason"] for c in body["choices"]} == {"tool_calls"}


def test_the_same_request_gets_the_same_calls_and_another_seed_may_not(client, auth):
    tools = [_tool("roll_dice", "Roll some dice", {"sides": {"type": "integer", "minimum": 4, "maximum": 100},
                                                   "label": {"type": "string"}})]
    messages = [{"role": "user", "content": "roll the dice"}]
    first = calls_of(ask(client, auth, messages, tools=tools, seed=1))
    assert calls_of(ask(client, auth, messages, tools=tools, seed=1)) == first
    seeded = [calls_of(ask(client, auth, messages, tools=tools, seed=seed))[0] for seed in range(2, 10)]
    assert len({call["id"] for call in seeded} | {first[0]["id"]}) == 9
    assert len({call["function"]["arguments"] for call in seeded}) > 1
    for call in seeded:
        assert_valid(json.loads(call["function"]["arguments"]), tools[0]["function"]["parameters"])


# -- streamed -----------------------------------------------------------------------------


def test_streamed_calls_come_in_pieces_one_finish_per_choice(client, auth):
    response = completions(client, auth, model=MODEL, messages=ASK_BOTH, tools=TOOLS, n=2, stream=True)
    events = stream_events(response)
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)  # no usage chunk: not asked for
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    built: dict[tuple[int, int], dict] = {}
    pieces: dict[tuple[int, int], int] = {}
    finishes = []
    for chunk in chunks:
        [choice] = chunk["choices"]
        for delta in choice["delta"].get("tool_calls") or []:
            call = built.setdefault((choice["index"], delta["index"]), {"arguments": ""})
            call.update({k: delta[k] for k in ("id", "type") if k in delta})
            call.setdefault("name", delta["function"].get("name"))
            call["arguments"] += delta["function"].get("arguments", "")
            pieces[choice["index"], delta["index"]] = pieces.get((choice["index"], delta["index"]), 0) + 1
        if choice["finish_reason"]:
            finishes.append((choice["index"], choice["finish_reason"]))
    assert finishes == [(0, "tool_calls"), (1, "tool_calls")]
    assert min(pieces.values()) > 2  # a head, then the arguments in several pieces
    plain = ask(client, auth, ASK_BOTH, tools=TOOLS, n=2)
    for index in range(2):
        expected = [{"id": c["id"], "type": "function", "name": c["function"]["name"],
                     "arguments": c["function"]["arguments"]} for c in calls_of(plain, index)]
        assert [built[index, at] for at in range(len(expected))] == expected


def test_the_sdk_puts_streamed_calls_back_together(sdk):
    plain = sdk.chat.completions.create(model=MODEL, messages=ASK_BOTH, tools=TOOLS)
    stream = sdk.chat.completions.create(model=MODEL, messages=ASK_BOTH, tools=TOOLS, stream=True,
                                         stream_options={"include_usage": True})
    calls: dict[int, dict] = {}
    chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = delta.id or call["id"]
                call["name"] = (delta.function.name if delta.function else None) or call["name"]
                call["arguments"] += (delta.function.arguments if delta.function else None) or ""
    assert [calls[i] for i in sorted(calls)] == [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in plain.choices[0].message.tool_calls]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens

    with sdk.chat.completions.stream(model=MODEL, messages=ASK_BOTH, tools=TOOLS) as helper:
        final = helper.get_final_completion()
    assert [(c.id, c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in plain.choices[0].message.tool_calls]
    assert final.choices[0].finish_reason == "tool_calls"


# -- structured output --------------------------------------------------------------------


class Gate(pydantic.BaseModel):
    name: str
    open: bool


class Castle(pydantic.BaseModel):
    name: str
    towers: int = pydantic.Field(ge=1, le=12)
    kind: Literal["keep", "fortress", "palace"]
    ruler: Optional[str]
    gates: list[Gate]
    subcastles: list["Castle"]


def test_parse_with_a_pydantic_model_gives_the_object(sdk):
    messages = [{"role": "user", "content": "Describe a fortress named Elsinore with 4 towers."}]
    completion = sdk.chat.completions.parse(model=MODEL, messages=messages, response_format=Castle)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Castle) and isinstance(parsed.gates[0], Gate)
    assert (parsed.name, parsed.towers, parsed.kind) == ("Elsinore", 4, "fortress")
    again = sdk.chat.completions.parse(model=MODEL, messages=messages, response_format=Castle)
    assert again.choices[0].message.content == completion.choices[0].message.content


def test_parse_with_a_pydantic_tool_gives_parsed_arguments(sdk):
    class OpenGate(pydantic.BaseModel):
        """Open a gate of the castle."""

        gate: Literal["north", "south"]
        guards: int

    completion = sdk.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Open the south gate with 6 guards"}],
        tools=[openai.pydantic_function_tool(OpenGate)])
    [call] = completion.choices[0].message.tool_calls
    assert call.function.parsed_arguments == OpenGate(gate="south", guards=6)


def test_json_mode_answers_a_json_object_streamed_or_not(client, auth):
    body = ask(client, auth, ASK_NOTHING, response_format={"type": "json_object"})
    content = body["choices"][0]["message"]["content"]
    assert isinstance(json.loads(content)["answer"], str) and body["choices"][0]["finish_reason"] == "stop"
    events = stream_events(completions(client, auth, model=MODEL, messages=ASK_NOTHING, stream=True,
                                       response_format={"type": "json_object"}))
    streamed = [json.loads(data)["choices"][0]["delta"].get("content") or "" for _, data in events[:-1]]
    assert "".join(streamed) == content and len([p for p in streamed if p]) > 1


class Npc(pydantic.BaseModel):
    name: str
    level: int


ASK_NPC = "Describe a knight named Ada at level 7."


def test_json_mode_fills_the_schema_the_prompt_carries(client, auth):
    """JSON mode with the schema written in the system prompt (as instructor's JSON mode and
    many hand-written prompts do): the answer is valid for that schema, not `{"answer"}`."""
    schema = Npc.model_json_schema()
    system = ("Answer in JSON that matches the following json_schema:\n\n"
              f"{json.dumps(schema, indent=2)}\n\nReturn an instance of the JSON, not the schema itself.")
    messages = [{"role": "system", "content": system}, {"role": "user", "content": ASK_NPC}]
    body = ask(client, auth, messages, response_format={"type": "json_object"})
    value = json.loads(body["choices"][0]["message"]["content"])
    assert Npc.model_validate(value) == Npc(name="Ada", level=7)
    # A brace in the prompt that is no schema changes nothing.
    messages[0]["content"] = "Reply in JSON, e.g. {\"answer\": \"...\"} or {broken."
    body = ask(client, auth, messages, response_format={"type": "json_object"})
    assert set(json.loads(body["choices"][0]["message"]["content"])) == {"answer"}


@pytest.mark.parametrize("data", [
    '{"id": 7, "properties": {"color": "red"}}',  # a record, not a schema
    '{"type": "Feature", "properties": {"name": "x"}}',
    '{"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}',
    '{"type": "object", "properties": {"a": {"type": "integer", "minimum": "x"}}}',
    '{"type": "object", "properties": {"a": {"$ref": 5}}}',
    '{"type": "object", "properties": {"a": {"enum": 3}}}',
    '{"type": "object", "properties": {"a": {"type": "number", "multipleOf": 0}}}',
    '{"type": "object", "properties": {}, "required": 5}',
    '{"type": "object", "properties": {"a": {"type": "string", "minLength": 5, "maxLength": 1}}, "required": ["a"]}',
], ids=["record", "geojson", "pattern", "minimum", "ref", "enum", "multipleOf", "required", "impossible"])
def test_json_mode_answers_plainly_when_the_prompt_s_object_is_no_usable_schema(client, auth, data):
    """Data that merely has `properties`, a schema its metaschema refuses, or one no value can
    satisfy: `{"answer": ...}`, never a failure."""
    messages = [{"role": "user", "content": f"Summarise this record: {data}"}]
    body = ask(client, auth, messages, response_format={"type": "json_object"})
    assert set(json.loads(body["choices"][0]["message"]["content"])) == {"answer"}


def test_the_schema_search_is_bounded_per_request_whatever_n_and_the_messages(monkeypatch):
    """Messages made so that every `{` starts a long failed read, many of them, and many
    choices: the reads and metaschema checks stay within one request's budget. (Asked of the
    provider itself: through the API, the model's context window refuses such a conversation
    first.)"""
    from gaia_app.providers import local_tools

    reads, checks = [], []

    class Counting(json.JSONDecoder):
        def raw_decode(self, s, idx=0):
            reads.append(idx)
            return super().raw_decode(s, idx)

    def counted_problem(schema):
        checks.append(schema)
        return "refused here"

    monkeypatch.setattr(local_tools.json, "JSONDecoder", Counting)
    monkeypatch.setattr(local_tools, "schema_problem", counted_problem)
    hostile = '{"a":' * 200 + '"' + "x" * 2000
    candidates = " ".join('{"properties": {"p%d": {}}}' % i for i in range(50))
    provider = LocalProvider(ProviderDeclaration(id="local", kind="local", name="Local"))
    messages = tuple(ChatMessage("user", text) for text in [hostile] * 20 + [candidates])
    completion = provider.complete(ChatRequest(model=MODEL, messages=messages, relay=True,
                                               options={"response_format": {"type": "json_object"}, "n": 8}))
    assert len(completion.raw["choices"]) == 8
    assert all(set(json.loads(c["message"]["content"])) == {"answer"} for c in completion.raw["choices"])
    assert 0 < len(reads) <= local_tools.SCHEMA_SEARCH_STARTS
    assert 0 < len(checks) <= local_tools.SCHEMA_CANDIDATES


def test_a_tool_is_chosen_by_its_parameters_names_too(client, auth):
    """A structured-output tool named after a class (`Npc`), with no description: the message
    names its parameters (`level`, `named`), so `auto` calls it."""
    npc = {"type": "function", "function": {"name": "Npc", "parameters": Npc.model_json_schema()}}
    body = ask(client, auth, [{"role": "user", "content": ASK_NPC}], tools=[npc], tool_choice="auto")
    [call] = calls_of(body)
    assert Npc.model_validate_json(call["function"]["arguments"]) == Npc(name="Ada", level=7)
    # A message that names none of them still gets text.
    body = ask(client, auth, ASK_NOTHING, tools=[npc], tool_choice="auto")
    assert calls_of(body) == [] and body["choices"][0]["message"]["content"]


def test_a_json_answer_is_cut_at_max_tokens_like_any_answer(client, auth):
    schema = {"type": "object", "properties": {"story": {"type": "string", "minLength": 200}}, "required": ["story"]}
    body = ask(client, auth, ASK_NOTHING, max_tokens=5,
               response_format={"type": "json_schema", "json_schema": {"name": "tale", "schema": schema}})
    assert body["choices"][0]["finish_reason"] == "length"
    whole = ask(client, auth, ASK_NOTHING,
                response_format={"type": "json_schema", "json_schema": {"name": "tale", "schema": schema}})
    assert whole["choices"][0]["message"]["content"].startswith(body["choices"][0]["message"]["content"])
    assert_valid(json.loads(whole["choices"][0]["message"]["content"]), schema)


# -- the older functions ------------------------------------------------------------------


FUNCTIONS = [t["function"] for t in TOOLS]


def test_functions_answer_with_a_function_call(client, auth):
    body = ask(client, auth, ASK_BOTH, functions=FUNCTIONS)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "function_call" and "tool_calls" not in choice["message"]
    call = choice["message"]["function_call"]
    assert call["name"] == "get_weather"  # one call, even when two match
    assert_valid(json.loads(call["arguments"]), schema_of(TOOLS, "get_weather"))
    named = ask(client, auth, ASK_BOTH, functions=FUNCTIONS, function_call={"name": "get_time"})
    assert named["choices"][0]["message"]["function_call"]["name"] == "get_time"
    none = ask(client, auth, ASK_BOTH, functions=FUNCTIONS, function_call="none")
    assert none["choices"][0]["message"]["content"] and none["choices"][0]["finish_reason"] == "stop"

    loop = [*ASK_BOTH, choice["message"], {"role": "function", "name": "get_weather", "content": "windy"}]
    answer = ask(client, auth, loop, functions=FUNCTIONS)["choices"][0]
    assert "get_weather returned: windy." in answer["message"]["content"]


def test_functions_stream_as_function_call_deltas(client, auth):
    events = stream_events(completions(client, auth, model=MODEL, messages=ASK_WEATHER, stream=True,
                                       functions=FUNCTIONS))
    deltas = [json.loads(data)["choices"][0] for _, data in events[:-1]]
    name = "".join(d["delta"].get("function_call", {}).get("name") or "" for d in deltas)
    arguments = "".join(d["delta"].get("function_call", {}).get("arguments") or "" for d in deltas)
    plain = ask(client, auth, ASK_WEATHER, functions=FUNCTIONS)["choices"][0]["message"]["function_call"]
    assert {"name": name, "arguments": arguments} == plain
    assert [d["finish_reason"] for d in deltas if d["finish_reason"]] == ["function_call"]


# -- what stays as it was -----------------------------------------------------------------


def test_outside_v1_the_calls_come_without_a_raw_answer():
    provider = LocalProvider(ProviderDeclaration(id="local", kind="local", name="Local"))
    asked = (ChatMessage("user", ASK_WEATHER[0]["content"]),)
    request = ChatRequest(model=MODEL, messages=asked, options={"tools": TOOLS})
    completion = provider.complete(request)
    assert completion.raw is None and completion.text == "" and completion.finish_reason == "tool_calls"
    relayed = provider.complete(ChatRequest(model=MODEL, messages=asked, options={"tools": TOOLS}, relay=True))
    assert [call.name for call in completion.tool_calls] == ["get_weather"]
    assert [{"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in completion.tool_calls] == relayed.raw["choices"][0]["message"]["tool_calls"]
    streamed = list(provider.stream(request))
    assert all(chunk.raw is None for chunk in streamed) and "".join(chunk.text for chunk in streamed) == ""
    assert streamed[-1].tool_calls == completion.tool_calls and streamed[-1].finish_reason == "tool_calls"
    # Without tools the answer is text, as it always was.
    plain = provider.complete(ChatRequest(model=MODEL, messages=asked))
    assert plain.text and plain.tool_calls == () and plain.finish_reason in ("stop", "length")


def test_local_models_say_they_take_tools_and_json_schema(client, auth):
    models = client.get("/api/v0.2/providers/local/models", headers=auth).get_json()["models"]
    assert models and all({"tools", "json_schema"} <= set(model["capabilities"]) for model in models)


# -- any schema ---------------------------------------------------------------------------

WORDS = st.sampled_from(["north", "gate", "Paris", "tower", "3", "river", "Ada", "12.5"])
DESCRIPTIONS = st.sampled_from(["", "the gate", "a city", "how many towers"])


def _integers():
    def build(step, k, below, above, exclusive):
        schema = {"type": "integer", "minimum": k * step - below, "maximum": k * step + above}
        if step > 1:
            schema["multipleOf"] = step
        if exclusive:
            schema["exclusiveMinimum"] = schema.pop("minimum") - 1
        return schema
    return st.builds(build, st.sampled_from([1, 2, 5]), st.integers(-20, 20), st.integers(0, 30),
                     st.integers(0, 30), st.booleans())


def _numbers():
    def build(low, span, exclusive, half):
        schema = {"type": "number", ("exclusiveMinimum" if exclusive else "minimum"): low,
                  "maximum": low + span}
        if half:
            schema["multipleOf"] = 0.5
        return schema
    return st.builds(build, st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 2)),
                     st.floats(1, 50), st.booleans(), st.booleans())


LEAVES = st.one_of(
    st.builds(lambda low, more, text: {"type": "string", "minLength": low, "maxLength": low + more,
                                       "description": text},
              st.integers(0, 12), st.integers(0, 12), DESCRIPTIONS),
    st.sampled_from([{"type": "string", "format": f} for f in ("date", "date-time", "email", "uuid", "ipv4")]),
    st.lists(st.sampled_from(["north", "south", "Paris", 3, 2.5, True, None]), min_size=1, max_size=4,
             unique=True).map(lambda options: {"enum": options}),
    st.sampled_from([{"const": "fixed"}, {"type": "boolean"}, {"type": "null"}, {},
                     {"type": ["string", "null"]}, {"type": ["integer", "null"], "minimum": 5}]),
    _integers(), _numbers(),
    st.just({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1000},
             "minItems": 2, "uniqueItems": True}),
)


def _composites(children):
    names = st.sampled_from(["gate", "city", "towers", "label", "when", "count"])
    objects = st.builds(
        lambda properties, keep, closed: {
            "type": "object", "properties": properties, "additionalProperties": not closed,
            "required": [name for name, kept in zip(properties, keep) if kept]},
        st.dictionaries(names, children, max_size=4), st.lists(st.booleans(), min_size=4, max_size=4),
        st.booleans())
    arrays = st.builds(lambda items, low, more: {"type": "array", "items": items, "minItems": low,
                                                 "maxItems": low + more},
                       children, st.integers(0, 3), st.integers(0, 3))
    choices = st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches})
    distinct = st.permutations(["string", "integer", "boolean", "null"]).map(
        lambda kinds: {"oneOf": [{"type": kind} for kind in kinds[:2]]})
    nullable = children.map(lambda child: {"anyOf": [child, {"type": "null"}]})
    both = st.tuples(children, children).map(lambda pair: {"allOf": [
        {"type": "object", "properties": {"first": pair[0]}, "required": ["first"]},
        {"properties": {"second": pair[1]}, "required": ["second"]}]})
    return st.one_of(objects, arrays, choices, distinct, nullable, both)


SCHEMAS = st.recursive(LEAVES, _composites, max_leaves=8)


def _with_a_ref(schema: dict, part: dict) -> dict:
    """An object schema holding `schema`, and `part` behind a `$ref`."""
    return {"type": "object", "properties": {"thing": schema, "part": {"$ref": "#/$defs/Part"}},
            "required": ["thing", "part"], "$defs": {"Part": part}}


@settings(max_examples=300, deadline=None)
@given(schema=SCHEMAS, words=st.lists(WORDS, max_size=6), seed=st.integers(0, 2**32))
def test_values_are_valid_for_any_schema_of_the_strategy(schema, words, seed):
    value, valid = value_for(schema, Vocabulary(" ".join(words)), random.Random(seed))
    assert valid
    assert_valid(value, schema)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=SCHEMAS, part=SCHEMAS, words=st.lists(WORDS, min_size=1, max_size=6))
def test_arguments_and_json_answers_are_valid_for_their_schema(client, auth, schema, part, words):
    parameters = _with_a_ref(schema, part)
    messages = [{"role": "user", "content": "inspect " + " ".join(words)}]
    tools = [{"type": "function", "function": {"name": "inspect_thing", "parameters": parameters}}]
    [call] = calls_of(ask(client, auth, messages, tools=tools, tool_choice="required"))
    assert_valid(json.loads(call["function"]["arguments"]), parameters)
    answer = ask(client, auth, messages, response_format={
        "type": "json_schema", "json_schema": {"name": "thing", "schema": parameters, "strict": False}})
    assert_valid(json.loads(answer["choices"][0]["message"]["content"]), parameters)


def test_a_tool_whose_arguments_cannot_be_made_is_not_called_on_auto(client, auth):
    tools = [_tool("file_ticket", "File a ticket", {"ticket": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"}})]
    messages = [{"role": "user", "content": "file a ticket please"}]
    body = ask(client, auth, messages, tools=tools)
    assert not calls_of(body) and body["choices"][0]["message"]["content"]
    # Asked for, the call is made all the same.
    assert [c["function"]["name"] for c in calls_of(ask(client, auth, messages, tools=tools,
                                                         tool_choice="required"))] == ["file_ticket"]


def test_an_assistant_turn_of_tool_calls_may_have_an_empty_part_list(client, auth):
    messages = [{"role": "user", "content": "What is the weather in Paris?"},
                {"role": "assistant", "content": [], "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"}]
    response = client.post("/v1/chat/completions", headers=auth, json={"model": "gaia-local", "messages": messages})
    assert response.status_code == 200, response.get_data(as_text=True)
    empty_user = [{"role": "user", "content": []}]
    assert client.post("/v1/chat/completions", headers=auth,
                       json={"model": "gaia-local", "messages": empty_user}).status_code == 400


def test_a_forced_call_is_made_even_after_tool_results(client, auth):
    """`required` or a named tool means a call, whatever came before (a validation loop that
    sends the error back as a tool result and asks again, as instructor does)."""
    tool = {"type": "function", "function": {"name": "Npc", "parameters": {
        "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}
    messages = [{"role": "user", "content": "make an npc"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "Npc", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "name": "Npc", "content": "name is required"}]
    for choice in ("required", {"type": "function", "function": {"name": "Npc"}}):
        body = client.post("/v1/chat/completions", headers=auth, json={
            "model": "gaia-local", "messages": messages, "tools": [tool], "tool_choice": choice}).get_json()
        assert body["choices"][0]["finish_reason"] == "tool_calls", body
    auto = client.post("/v1/chat/completions", headers=auth, json={
        "model": "gaia-local", "messages": messages, "tools": [tool]}).get_json()
    assert auto["choices"][0]["finish_reason"] == "stop"
