"""The OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`), by hand and with the SDK.

The `openai` provider is a loopback FakeOpenAI and is the deployment's default model
(gpt-4o-mini), so `persona:<name>` requests go to it and what they send can be checked; the
built-in `local` provider serves `gaia-local`. The official `openai` package talks to the app
served by a real threaded werkzeug server on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import uuid

import openai
import pytest
from werkzeug.serving import make_server

from gaia_app import accounts
from gaia_app.extensions import db
from gaia_app.models import DEFAULT_PERSONA_ID, Persona
from gaia_app.state import gaia
from tests.conftest import make_app, upgrade
from tests.fakes.llm_servers import Behaviour, FakeOpenAI

KEY_A = "sk-fake-openai"
MAX_MESSAGES = 8
MAX_CHARS = 2000


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_proxy():
    """Provider sessions and the SDK honour proxy settings: loopback must go direct."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("NO_PROXY", "no_proxy"):
            patch.setenv(name, "127.0.0.1,localhost")
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                     "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="module")
def oai():
    with FakeOpenAI(models=("gpt-4o-mini", "gpt-4o"), api_key=KEY_A) as server:
        yield server


@pytest.fixture(scope="module")
def app(no_proxy, oai, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('openai-compat') / 'x.db'}"
    app = make_app(
        url, tmp_path_factory,
        OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai.url + "/v1",
        DEFAULT_LLM_PROVIDER="openai", DEFAULT_LLM_MODEL="gpt-4o-mini",
        LLM_CONNECT_TIMEOUT="1", LLM_READ_TIMEOUT="1", CHAT_STREAM_KEEPALIVE="0.2",
        CHAT_MAX_MESSAGES=str(MAX_MESSAGES), CHAT_MAX_MESSAGE_CHARS=str(MAX_CHARS),
    )
    gaia(app).usage.background = False
    upgrade(app)
    gaia(app).providers.models()  # the fake's model list, fetched once now
    return app


def _key(app, scopes=None) -> str:
    with app.app_context():
        user = accounts.create_user(f"v1-{uuid.uuid4().hex[:8]}@example.com")
        _, plaintext = accounts.create_api_key(user, name="v1 tests", environment="local", scopes=scopes)
        db.session.commit()
    return plaintext


@pytest.fixture(scope="module")
def key(app):
    return _key(app)


@pytest.fixture(scope="module")
def auth(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def mu_prompt(app):
    with app.app_context():
        return db.session.get(Persona, DEFAULT_PERSONA_ID).system_prompt


@pytest.fixture(autouse=True)
def _fresh(request):
    yield
    if "oai" in request.fixturenames:
        request.getfixturevalue("oai").reset()
    if "app" in request.fixturenames:
        state = request.getfixturevalue("app").extensions["gaia"]
        state.providers._cooldowns.clear()
        state.usage.discard_pending()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def base_url(app):
    server = make_server(host="127.0.0.1", port=0, app=app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()
    thread.join(timeout=2)


@pytest.fixture(scope="module")
def sdk(base_url, key):
    http_client = openai.DefaultHttpxClient(trust_env=False)
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=10,
                           http_client=http_client)
    yield client
    client.close()


# -- helpers ------------------------------------------------------------------------------

USER = [{"role": "user", "content": "hi there"}]


def completions(client, auth, body=None, **changes):
    body = {"model": "gpt-4o-mini", "messages": USER, **changes} if body is None else body
    return client.post("/v1/chat/completions", json=body, headers=auth)


def chat_calls(fake) -> list[dict]:
    return [r for r in fake.requests if r["method"] == "POST"]


def stream_events(response) -> list[tuple[str | None, str]]:
    """(event name, data) of an SSE body; comments (keepalives) left out."""
    events = []
    for block in response.get_data(as_text=True).split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def openai_error_of(response, status: int) -> dict:
    """Assert OpenAI's error shape with this status; returns the inner error object."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    return error


# -- /v1/models ---------------------------------------------------------------------------


def test_models_lists_provider_models_and_personas(client, auth):
    response = client.get("/v1/models", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["object"] == "list"
    entries = {entry["id"]: entry for entry in body["data"]}
    assert {"gpt-4o-mini", "gpt-4o", "gaia-local", "gaia-local-mini", "persona:Mu"} <= set(entries)
    assert all(entry["object"] == "model" for entry in body["data"])
    assert entries["gpt-4o"]["owned_by"] == "openai" and entries["gaia-local"]["owned_by"] == "local"
    assert len(entries) == len(body["data"])  # each id once

    assert client.get("/v1/models/gpt-4o", headers=auth).get_json()["id"] == "gpt-4o"
    assert client.get("/v1/models/persona:Mu", headers=auth).get_json()["owned_by"] == "gaia"
    missing = openai_error_of(client.get("/v1/models/gpt-9", headers=auth), 404)
    assert missing["code"] == "model_not_found"


# -- /v1/chat/completions with the test client --------------------------------------------


def test_completion_not_streamed(client, auth, oai):
    messages = [{"role": "developer", "content": "Be short."},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": " there"}]}]
    response = completions(client, auth, messages=messages, max_completion_tokens=50, temperature=0.2)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-mini" and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Hello from openai. You said: hi there"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}

    [call] = chat_calls(oai)
    sent = call["json"]
    # Stateless, and exactly what the client sent (no persona added, parts kept as parts).
    assert sent["messages"] == messages
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2
    assert call["headers"]["authorization"] == f"Bearer {KEY_A}"


def test_completion_streamed_with_usage_chunk(client, auth):
    response = completions(client, auth, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = stream_events(response)
    assert events[-1] == (None, "[DONE]")
    assert all(name is None for name, _ in events)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o-mini" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from openai. You said: hi there"
    finish, usage = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "stop" and finish["choices"][0]["delta"] == {}
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])


def test_completion_streamed_without_usage_chunk(client, auth):
    events = stream_events(completions(client, auth, stream=True))
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"] for c in chunks)


@pytest.mark.parametrize("model_name", ["persona:Mu", "persona:mu"])
def test_persona_model_applies_the_persona_on_the_default_model(client, auth, oai, mu_prompt, model_name):
    response = completions(client, auth, model=model_name)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["model"] == model_name
    [call] = chat_calls(oai)
    assert call["json"]["model"] == "gpt-4o-mini"
    assert call["json"]["messages"] == [{"role": "system", "content": mu_prompt}, *USER]


def test_persona_model_streamed(client, auth, oai, mu_prompt):
    events = stream_events(completions(client, auth, model="persona:Mu", stream=True))
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks and all(c["model"] == "persona:Mu" for c in chunks)
    assert chat_calls(oai)[0]["json"]["messages"][0] == {"role": "system", "content": mu_prompt}


def test_no_key_is_401(client):
    error = openai_error_of(completions(client, {}), 401)
    assert error["code"] == "invalid_api_key"
    bad = openai_error_of(completions(client, {"Authorization": "Bearer gaia_local_not-a-real-key"}), 401)
    assert bad["code"] == "invalid_api_key"
    assert openai_error_of(client.get("/v1/models"), 401)["code"] == "invalid_api_key"


def test_key_without_chat_scope_is_403(client, app):
    assets_only = {"Authorization": f"Bearer {_key(app, scopes=['assets'])}"}
    error = openai_error_of(completions(client, assets_only), 403)
    assert error["type"] == "permission_error"
    openai_error_of(client.get("/v1/models", headers=assets_only), 403)


@pytest.mark.parametrize("model", ["gpt-9", "persona:Nobody", "local/gpt-9"])
def test_unknown_model_or_persona_is_404(client, auth, oai, model):
    error = openai_error_of(completions(client, auth, model=model), 404)
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    assert chat_calls(oai) == []


def test_malformed_json_is_400(client, auth):
    response = client.post("/v1/chat/completions", data=b'{"model": "gpt-4o-mini", "messages": [',
                           headers={**auth, "Content-Type": "application/json"})
    assert openai_error_of(response, 400)["type"] == "invalid_request_error"
    not_an_object = client.post("/v1/chat/completions", json=[USER], headers=auth)
    openai_error_of(not_an_object, 400)


BAD_REQUESTS = {
    "no-model": ({"model": None}, "model"),
    "model-not-a-string": ({"model": 4}, "model"),
    "messages-missing": ({"messages": None}, "messages"),
    "messages-empty": ({"messages": []}, "messages"),
    "messages-not-a-list": ({"messages": "hi there"}, "messages"),
    "bad-role": ({"messages": [{"role": "narrator", "content": "x"}, *USER]}, "messages[0]"),
    "tool-result-for-no-call": ({"messages": [*USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
                                "messages[1].tool_call_id"),
    "no-role": ({"messages": [{"content": "hi"}]}, "messages[0]"),
    # An object or array as the role was a 500 (unhashable in the role lookup).
    "object-role": ({"messages": [{"role": {}, "content": "hi"}, *USER]}, "messages[0]"),
    "array-role": ({"messages": [{"role": ["user"], "content": "hi"}, *USER]}, "messages[0]"),
    "message-not-an-object": ({"messages": ["hi"]}, "messages[0]"),
    "image-over-http": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}]},
        "messages[0].content[0].image_url.url"),
    "data-url-not-an-image": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:text/html;base64,PGI+"}}]}]},
        "messages[0].content[0].image_url.url"),
    "unknown-part": ({"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
                     "messages[0].content[0]"),
    "number-content": ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    "no-user-message": ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
    "n-0": ({"n": 0}, "n"),
    "tool-schema-not-a-schema": ({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": 5}}}]}, "tools[0].function.parameters"),
    "schema-uri-not-a-string": ({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"$schema": ["x"], "type": "object"}}}]}, "tools[0].function.parameters"),
    "tool-without-name": ({"tools": [{"type": "function", "function": {"description": "x"}}]},
                          "tools[0].function.name"),
    "500-tools": ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(500)]}, "tools"),
    "tool-twice": ({"tools": [{"type": "function", "function": {"name": "f"}}] * 2}, "tools[1]"),
    "tool-choice-unknown": ({"tools": [{"type": "function", "function": {"name": "f"}}],
                             "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice"),
    "json-schema-invalid": ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "npc", "schema": {"type": "object", "properties": 3}}}},
        "response_format.json_schema.schema"),
    "response-format-unknown": ({"response_format": {"type": "yaml"}}, "response_format"),
    "assistant-tool-call-without-id": ({"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages[1].tool_calls[0]"),
    "stop-5": ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    "top-p-2": ({"top_p": 2}, "top_p"),
    "logit-bias-words": ({"logit_bias": {"hello": 5}}, "logit_bias"),
    "top-logprobs-50": ({"top_logprobs": 50}, "top_logprobs"),
    "metadata-nested": ({"metadata": {"a": {"b": 1}}}, "metadata"),
    "too-many-messages": ({"messages": USER * (MAX_MESSAGES + 1)}, "messages"),
    "oversized-content": ({"messages": [{"role": "user", "content": "x" * (MAX_CHARS + 1)}]},
                          "messages[0].content"),
    "max-tokens-0": ({"max_tokens": 0}, "max_tokens"),
    "max-completion-tokens-0": ({"max_completion_tokens": 0}, "max_completion_tokens"),
    "max-tokens-text": ({"max_tokens": "10"}, "max_tokens"),
    "temperature-5": ({"temperature": 5}, "temperature"),
    "stream-not-bool": ({"stream": "yes"}, "stream"),
}


@pytest.mark.parametrize("changes, param", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_invalid_requests_are_400_naming_the_param(client, auth, oai, changes, param):
    body = {"model": "gpt-4o-mini", "messages": USER, **changes}
    body = {name: value for name, value in body.items() if value is not None}  # None: left out
    error = openai_error_of(completions(client, auth, body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert chat_calls(oai) == []


def test_max_tokens_above_the_models_limit_is_400(client, auth):
    error = openai_error_of(completions(client, auth, model="gaia-local", max_tokens=5000), 400)
    assert error["param"] == "max_tokens"


def test_provider_429_is_429_in_openai_shape_with_retry_after(client, auth, oai):
    oai.behaviour = Behaviour(status=429, retry_after=5)
    response = completions(client, auth)
    error = openai_error_of(response, 429)
    assert response.headers["Retry-After"] == "5"
    assert error["code"] == "rate_limit_exceeded"
    # Within the pause, streamed too: refused before any stream starts, the provider untouched.
    again = completions(client, auth, stream=True)
    openai_error_of(again, 429)
    assert 1 <= int(again.headers["Retry-After"]) <= 5
    assert len(chat_calls(oai)) == 1


def test_provider_failure_is_5xx_in_openai_shape(client, auth, oai):
    oai.behaviour = Behaviour(status=503)
    error = openai_error_of(completions(client, auth), 502)
    assert error["type"] == "server_error"
    oai.behaviour = Behaviour(hang=True)
    assert openai_error_of(completions(client, auth), 504)["type"] == "server_error"


def test_mid_stream_failure_is_an_error_event(client, auth, oai):
    oai.behaviour = Behaviour(reply="one two three four", fail_after_chunks=2)
    response = completions(client, auth, stream=True)
    assert response.status_code == 200
    events = stream_events(response)
    assert events[-1] == (None, "[DONE]")
    errors = [json.loads(data) for name, data in events if name == "error"]
    assert len(errors) == 1 and set(errors[0]) == {"error"}
    assert errors[0]["error"]["message"] and errors[0]["error"]["type"] == "interrupted"


# -- the official SDK ---------------------------------------------------------------------


def test_sdk_lists_models(sdk):
    ids = {model.id for model in sdk.models.list()}
    assert {"gaia-local", "gpt-4o-mini", "persona:Mu"} <= ids
    assert sdk.models.retrieve("gaia-local").owned_by == "local"


def test_sdk_completion_local_provider_streamed_and_not(sdk):
    messages = [{"role": "user", "content": "Tell me about the garden."}]
    completion = sdk.chat.completions.create(model="gaia-local", messages=messages)
    assert completion.model == "gaia-local" and completion.object == "chat.completion"
    text = completion.choices[0].message.content
    assert text and completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens > 0

    stream = sdk.chat.completions.create(model="gaia-local", messages=messages, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # the local provider is deterministic
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == completion.usage.total_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == completion.choices[0].finish_reason


def test_sdk_fake_backed_model_streamed(sdk, oai):
    stream = sdk.chat.completions.create(model="gpt-4o-mini", stream=True,
                                         messages=[{"role": "user", "content": "ping pong"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from openai. You said: ping pong"
    assert len(chat_calls(oai)) == 1


def test_sdk_persona_model(sdk, oai, mu_prompt):
    completion = sdk.chat.completions.create(model="persona:Mu", messages=[{"role": "user", "content": "hello"}])
    assert completion.model == "persona:Mu"
    assert completion.choices[0].message.content == "Hello from openai. You said: hello"
    assert chat_calls(oai)[0]["json"]["messages"][0] == {"role": "system", "content": mu_prompt}


def test_sdk_bad_key_is_authentication_error(base_url):
    client = openai.OpenAI(base_url=base_url, api_key="gaia_local_wrong", max_retries=0, timeout=10,
                           http_client=openai.DefaultHttpxClient(trust_env=False))
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gaia-local", messages=USER)
    client.close()


def test_sdk_unknown_model_is_not_found(sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-9", messages=USER)
    assert caught.value.code == "model_not_found"


def test_sdk_bad_request(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gaia-local", messages=USER, logit_bias={"50256": -100})
    assert caught.value.param == "logit_bias" and "local" in caught.value.message


def test_sdk_provider_429_is_rate_limit_error(sdk, oai):
    oai.behaviour = Behaviour(status=429, retry_after=5)
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=USER)
    assert caught.value.response.headers["retry-after"] == "5"
    assert len(chat_calls(oai)) == 1


def test_sdk_mid_stream_failure_raises_api_error(sdk, oai):
    oai.behaviour = Behaviour(reply="one two three four", fail_after_chunks=2)
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "one two"
    assert not isinstance(caught.value, openai.APIStatusError)  # the stream itself was a 200


def test_a_conversation_beyond_the_context_window_is_400(client, auth):
    # gaia-local reads 8192 tokens; 5 x 1990 marks cannot fit, whatever the tokenizer.
    body = {"model": "gaia-local", "messages": [{"role": "user", "content": "!" * 1990}] * 5}
    error = openai_error_of(completions(client, auth, body), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "8192" in error["message"]
    fits = {"model": "gaia-local", "messages": [{"role": "user", "content": "!" * 1990}] * 3}
    assert completions(client, auth, fits).status_code == 200
