"""Every Chat Completions parameter through `/v1`: forwarded as sent to OpenAI-kind providers
(answers relayed as they came), translated for Anthropic, honoured by `local`, or refused with
a 400 that names it and the provider; dropped only when the client asks, and then named."""

from __future__ import annotations

import json

import pytest

from gaia_app.state import gaia
from tests.conftest import make_app, upgrade
from tests.fakes.loopback import served
from tests.fakes.llm_servers import Behaviour, FakeAnthropic, FakeOpenAI
from tests.test_openai_compat import (  # noqa: F401 - fixtures
    KEY_A,
    USER,
    _key,
    chat_calls,
    completions,
    no_proxy,
    openai_error_of,
    stream_events,
)

KEY_B = "sk-ant-fake"
WEATHER = {"type": "function", "function": {
    "name": "open_gate", "description": "Open the castle gate",
    "parameters": {"type": "object", "properties": {"gate": {"type": "string"}}, "required": ["gate"]}}}


oai = served(FakeOpenAI, models=("gpt-4o-mini",), api_key=KEY_A)
ant = served(FakeAnthropic, models=("claude-haiku-4-5",), api_key=KEY_B)


@pytest.fixture(scope="module")
def app(no_proxy, oai, ant, tmp_path_factory):
    app = make_app(
        f"sqlite:///{tmp_path_factory.mktemp('v1-params') / 'x.db'}", tmp_path_factory,
        OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai.url + "/v1",
        ANTHROPIC_API_KEY=KEY_B, ANTHROPIC_BASE_URL=ant.url,
        DEFAULT_LLM_PROVIDER="openai", DEFAULT_LLM_MODEL="gpt-4o-mini",
        LLM_CONNECT_TIMEOUT="1", LLM_READ_TIMEOUT="2",
    )
    gaia(app).usage.background = False
    upgrade(app)
    gaia(app).providers.models()
    return app


@pytest.fixture(scope="module")
def auth(app):
    return {"Authorization": f"Bearer {_key(app)}"}


@pytest.fixture
def client(app, oai, ant):
    oai.reset()
    ant.reset()
    gaia(app).providers._cooldowns.clear()
    return app.test_client()


def test_openai_kind_gets_the_request_as_sent(client, auth, oai):
    messages = [
        {"role": "developer", "content": "You guard the castle."},
        {"role": "user", "name": "ada", "content": [
            {"type": "text", "text": "open it"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "open_gate", "arguments": "{\"gate\":\"north\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "opened"},
        {"role": "user", "content": "thanks"},
    ]
    extra = {"tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False, "seed": 7,
             "top_p": 0.5, "stop": ["END"], "user": "player-1", "metadata": {"quest": "gate"},
             "logprobs": True, "top_logprobs": 2, "response_format": {"type": "json_object"},
             "reasoning_effort": "low", "service_tier": "auto", "vendor_option": {"x": [1, 2]}}
    response = completions(client, auth, messages=messages, max_tokens=30, **extra)
    assert response.status_code == 200, response.get_data(as_text=True)
    [call] = chat_calls(oai)
    sent = call["json"]
    assert sent["messages"] == messages
    assert {name: sent[name] for name in extra} == extra
    assert sent["model"] == "gpt-4o-mini" and "X-Gaia-Dropped-Params" not in response.headers
    # The answer came back as the provider made it (its fingerprint and all).
    assert response.get_json()["system_fingerprint"] == "fp_fake"


def test_a_streamed_answer_is_relayed_as_it_came(client, auth, oai):
    events = stream_events(completions(client, auth, stream=True, tools=[WEATHER]))
    assert events[-1] == (None, "[DONE]") and [e for e in events if e[1] == "[DONE]"] == [events[-1]]
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["system_fingerprint"] == "fp_fake" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # Gaia asked for usage (to count it); the client did not, so no usage chunk reached it.
    assert all(c["choices"] for c in chunks)
    assert chat_calls(oai)[0]["json"]["stream_options"] == {"include_usage": True}


def test_a_persona_s_name_replaces_the_provider_s_model_in_relayed_chunks(client, auth):
    events = stream_events(completions(client, auth, model="persona:Mu", stream=True,
                                       stream_options={"include_usage": True}))
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["model"] for c in chunks} == {"persona:Mu"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_a_provider_s_error_code_and_param_reach_the_client(client, auth, oai):
    oai.behaviour = Behaviour(status=400, error=(
        "This model's maximum context length is 128000 tokens.", "context_length_exceeded", "messages"))
    error = openai_error_of(completions(client, auth), 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert "maximum context length" in error["message"]


# -- refused, or dropped on request ---------------------------------------------------------


@pytest.mark.parametrize("model, changes, param, provider", [
    ("claude-haiku-4-5", {"seed": 3}, "seed", "anthropic"),
    ("claude-haiku-4-5", {"n": 2}, "n", "anthropic"),
    ("claude-haiku-4-5", {"logprobs": True}, "logprobs", "anthropic"),
    ("gaia-local", {"logit_bias": {"42": 5}}, "logit_bias", "local"),
    ("gaia-local", {"vendor_option": 1}, "vendor_option", "local"),
])
def test_what_a_provider_cannot_take_is_refused_by_name(client, auth, oai, ant, model, changes, param, provider):
    error = openai_error_of(completions(client, auth, model=model, **changes), 400)
    assert error["param"] == param and f"'{provider}'" in error["message"]
    assert chat_calls(oai) == [] and chat_calls(ant) == []


@pytest.mark.parametrize("model, part, provider", [
    ("gaia-local", {"type": "image_url", "image_url": {"url": "https://example.com/gate.png"}}, "local"),
    ("claude-haiku-4-5", {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
     "anthropic"),
])
def test_content_a_provider_cannot_read_is_refused(client, auth, model, part, provider):
    messages = [{"role": "user", "content": [{"type": "text", "text": "look"}, part]}]
    error = openai_error_of(completions(client, auth, model=model, messages=messages), 400)
    assert error["param"] == "messages" and part["type"] in error["message"] and provider in error["message"]


def test_dropping_is_asked_for_and_named(client, auth, ant):
    response = client.post("/v1/chat/completions", headers={**auth, "X-Gaia-Drop-Params": "true"}, json={
        "model": "claude-haiku-4-5", "messages": USER, "seed": 3, "logit_bias": {"1": 2}, "top_p": 0.5})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Gaia-Dropped-Params"] == "seed, logit_bias"
    [call] = chat_calls(ant)
    assert "seed" not in call["json"] and "logit_bias" not in call["json"] and call["json"]["top_p"] == 0.5


def test_anthropic_gets_parameters_in_its_own_terms(client, auth, ant):
    response = completions(client, auth, model="claude-haiku-4-5", stop="THE END", user="player-7",
                           top_p=0.9, top_k=40)
    assert response.status_code == 200, response.get_data(as_text=True)
    sent = chat_calls(ant)[0]["json"]
    assert sent["stop_sequences"] == ["THE END"] and sent["metadata"] == {"user_id": "player-7"}
    assert sent["top_p"] == 0.9 and sent["top_k"] == 40  # a vendor field goes as it is
    assert "stop" not in sent and "user" not in sent


# -- local honours them ----------------------------------------------------------------------


def test_local_answers_n_choices_deterministically(client, auth):
    first = completions(client, auth, model="gaia-local", n=3).get_json()
    again = completions(client, auth, model="gaia-local", n=3).get_json()
    texts = [c["message"]["content"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2]
    assert texts == [c["message"]["content"] for c in again["choices"]]
    assert len(set(texts)) > 1
    assert first["system_fingerprint"] and first["usage"]["completion_tokens"] > 0


def test_local_honours_seed_and_stop(client, auth):
    def text(**changes):
        return completions(client, auth, model="gaia-local", **changes).get_json()["choices"][0]["message"]["content"]

    seeds = {text(seed=seed) for seed in range(8)}
    assert len(seeds) > 1 and text(seed=5) == text(seed=5)
    whole = text(seed=1)
    word = whole.split(" ")[2]
    cut = completions(client, auth, model="gaia-local", seed=1, stop=[word]).get_json()["choices"][0]
    assert cut["message"]["content"] == whole[: whole.index(word)] and cut["finish_reason"] == "stop"


def test_local_streams_every_choice_and_usage_when_asked(client, auth):
    events = stream_events(completions(client, auth, model="gaia-local", n=2, stream=True,
                                       stream_options={"include_usage": True}))
    chunks = [json.loads(data) for _, data in events[:-1]]
    by_choice = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        [choice] = chunk["choices"]
        by_choice[choice["index"]] += choice["delta"].get("content") or ""
    plain = completions(client, auth, model="gaia-local", n=2).get_json()
    assert [by_choice[0], by_choice[1]] == [c["message"]["content"] for c in plain["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert len(finishes) == 2


def test_every_model_id_chat_accepts_can_be_retrieved(client, auth):
    for model_id, owner in (("openai/gpt-4o-mini", "openai"), ("anthropic/claude-haiku-4-5", "anthropic"),
                            ("local/gaia-local", "local"), ("gpt-4o-mini", "openai")):
        assert completions(client, auth, model=model_id).status_code == 200, model_id
        entry = client.get(f"/v1/models/{model_id}", headers=auth).get_json()
        assert (entry["id"], entry["owned_by"]) == (model_id, owner)
    for missing in ("openai/gpt-9", "nowhere/gpt-4o-mini"):
        assert openai_error_of(client.get(f"/v1/models/{missing}", headers=auth), 404)["code"] == "model_not_found"


def test_the_readme_shows_the_parameter_table_as_it_is():
    from pathlib import Path

    from gaia_app.providers.params import PARAMETERS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name, kinds in PARAMETERS.items():
        cells = [kinds.get(kind) or "refused" for kind in ("openai", "anthropic", "local")]
        assert f"| `{name}` | " + " | ".join(cells) + " |" in readme, name


def test_errors_about_a_message_count_as_the_client_does_behind_a_persona_prompt():
    from gaia_app.providers.anthropic_request import Untranslatable, messages_request
    from gaia_app.providers.base import ChatMessage, ChatRequest

    client_messages = [
        {"role": "user", "content": "open the gate"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "open_gate", "arguments": "not json"}}]},
    ]
    for prepended in (0, 1):
        wire = ({"role": "system", "content": "You are Mu."},) * prepended + tuple(client_messages)
        request = ChatRequest(model="claude-haiku-4-5", messages=(ChatMessage("user", "open the gate"),),
                              wire_messages=wire, prepended=prepended, relay=True)
        with pytest.raises(Untranslatable) as caught:
            messages_request(request, 100)
        assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def test_a_legacy_function_result_s_name_is_not_a_message_name():
    from gaia_app.providers.params import features_of

    assert "name" not in features_of([{"role": "function", "name": "open_gate", "content": "done"}])
    assert "name" not in features_of([{"role": "tool", "tool_call_id": "c1", "name": "open_gate", "content": "done"}])
    assert "name" in features_of([{"role": "user", "name": "ada", "content": "hi"}])


def test_a_request_a_provider_refuses_does_not_mark_it_degraded(client, auth, oai, app):
    oai.behaviour = Behaviour(status=400, error=("Invalid 'tools[0]'.", "invalid_value", "tools"))
    openai_error_of(completions(client, auth), 400)
    provider = gaia(app).providers.get("openai")
    assert provider.health().status == "available"


def test_models_say_what_they_take(client, auth):
    models = {m["id"]: m for m in client.get("/api/v0.2/models", headers=auth).get_json()["models"]}
    assert {"vision", "tools", "json_schema"} <= set(models["claude-haiku-4-5"]["capabilities"])
    assert {"tools", "json_schema"} <= set(models["gaia-local"]["capabilities"])
    assert "vision" not in models["gaia-local"]["capabilities"]
    # An OpenAI-compatible server's models: not known, so nothing is claimed (the server decides).
    assert models["gpt-4o-mini"]["capabilities"] == ["chat", "streaming"]


def test_openai_s_own_models_say_what_they_take():
    from gaia_app.providers.base import ProviderDeclaration
    from gaia_app.providers.openai_compat import OPENAI_DEFAULT_BASE_URL, OpenAICompatibleProvider

    provider = OpenAICompatibleProvider(ProviderDeclaration(
        id="openai", kind="openai", name="OpenAI", base_url=OPENAI_DEFAULT_BASE_URL, api_key="sk-x",
        list_models=False))
    assert {"vision", "tools", "json_schema"} <= set(provider.model("gpt-4o").capabilities)
    assert provider.model("my-fine-tune").capabilities == ("chat", "streaming")
    declared = provider.model("gpt-4o", {"capabilities": ["chat"]})
    assert declared.capabilities == ("chat",)


def test_images_go_only_to_a_model_not_known_to_be_blind(no_proxy, oai, tmp_path_factory):
    """A model declared without "vision" is refused images; one whose capabilities are not
    known gets them, and the provider decides."""
    folder = tmp_path_factory.mktemp("vision")
    (folder / "providers.json").write_text(json.dumps({"providers": [{
        "id": "lab", "base_url": oai.url + "/v1", "api_key_env": "LAB_KEY", "list_models": False,
        "models": [{"id": "gpt-4o-mini", "capabilities": ["chat", "streaming"]}]}]}))
    app = make_app(f"sqlite:///{folder / 'x.db'}", tmp_path_factory, LAB_KEY=KEY_A,
                   OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai.url + "/v1",
                   GAIA_PROVIDERS_FILE=str(folder / "providers.json"))
    upgrade(app)
    client, auth = app.test_client(), {"Authorization": f"Bearer {_key(app)}"}
    oai.reset()
    image = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                          {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]
    error = openai_error_of(completions(client, auth, model="lab/gpt-4o-mini", messages=image), 400)
    assert error["param"] == "messages" and "vision" in error["message"]
    assert chat_calls(oai) == []
    assert completions(client, auth, model="openai/gpt-4o-mini", messages=image).status_code == 200
    assert completions(client, auth, model="lab/gpt-4o-mini").status_code == 200
