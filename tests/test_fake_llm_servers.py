"""The fake LLM providers must speak the real wire formats, or tests against them prove nothing."""

from __future__ import annotations

import json
import threading
import time
from http.client import HTTPConnection

import openai
import pytest
import requests

from tests.fakes.llm_servers import Behaviour, FakeAnthropic, FakeOpenAI

OPENAI_KEY = "sk-fake-openai"
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-fake", "anthropic-version": "2023-06-01"}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """The official client honours HTTP(S)_PROXY; loopback must never go through a proxy."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def http():
    with requests.Session() as session:
        session.trust_env = False
        yield session


@pytest.fixture
def oai():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def ant():
    with FakeAnthropic() as server:
        yield server


def _body(defaults: dict, changes: dict | None) -> dict:
    """Defaults updated by `changes`; a None value leaves the field out."""
    return {k: v for k, v in {**defaults, **(changes or {})}.items() if v is not None}


def chat(http, server, body=None, key=OPENAI_KEY, timeout=5, **kw):
    body = _body({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]},
                 body)
    return http.post(server.url + "/v1/chat/completions", json=body, timeout=timeout,
                     headers={"Authorization": f"Bearer {key}"}, **kw)


def messages(http, server, body=None, headers=ANTHROPIC_HEADERS, timeout=5, **kw):
    body = _body({"model": "claude-haiku-4-5", "max_tokens": 100,
                  "messages": [{"role": "user", "content": "hi there"}]}, body)
    return http.post(server.url + "/v1/messages", json=body, headers=headers, timeout=timeout,
                     **kw)


def sse(response) -> list[tuple[str | None, str]]:
    """(event name, data) pairs, parsed the way an SSE client does."""
    events, name, data = [], None, []
    for line in response.iter_lines(decode_unicode=True):
        if line:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        elif data:
            events.append((name, "\n".join(data)))
            name, data = None, []
    return events


def wait_for(predicate, timeout=1.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# -- OpenAI ------------------------------------------------------------------------------------


def test_openai_models_and_auth(http, oai):
    r = http.get(oai.url + "/v1/models", headers={"Authorization": f"Bearer {OPENAI_KEY}"})
    assert r.status_code == 200
    assert r.json()["object"] == "list"
    assert [m["id"] for m in r.json()["data"]] == ["gpt-4o-mini", "gpt-4o"]
    assert {"object": "model", "owned_by": "openai"}.items() <= r.json()["data"][0].items()
    assert isinstance(r.json()["data"][0]["created"], int)

    for headers in ({"Authorization": "Bearer sk-wrong-key-123"}, {}):
        r = http.get(oai.url + "/v1/models", headers=headers)
        assert r.status_code == 401
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
        assert error["message"].startswith("Incorrect API key provided: ")
        assert error["param"] is None
        assert "wrong-key" not in error["message"]  # keys are masked, as the API does


def test_openai_non_stream_reply_usage_and_recording(http, oai):
    parts = [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]
    r = chat(http, oai, {"messages": [{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": parts}], "temperature": 0.2})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini" and body["system_fingerprint"] == "fp_fake"
    reply = "Hello from openai. You said: one two three"
    assert body["choices"] == [{
        "index": 0, "message": {"role": "assistant", "content": reply, "refusal": None},
        "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}
    [req] = oai.requests
    assert req["method"] == "POST" and req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert req["json"]["temperature"] == 0.2


def test_openai_validation_errors(http, oai):
    r = chat(http, oai, {"model": "gpt-9"})
    assert r.status_code == 404
    assert r.json()["error"] == {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": None, "code": "model_not_found"}
    for broken, code in [({"messages": []}, "empty_array"),
                         ({"messages": None}, "missing_required_parameter"),
                         ({"max_tokens": 0}, "integer_below_min_value")]:
        r = chat(http, oai, broken)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        assert r.json()["error"]["code"] == code
    r = http.post(oai.url + "/v1/chat/completions", data=b"{nope",
                  headers={"Authorization": f"Bearer {OPENAI_KEY}"})
    assert r.status_code == 400


def test_openai_max_tokens_truncates(http, oai):
    oai.behaviour = Behaviour(reply="a b c d e")
    body = chat(http, oai, {"max_tokens": 3}).json()
    assert body["choices"][0]["message"]["content"] == "a b c"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    r = chat(http, oai, {"max_completion_tokens": 2, "stream": True}, stream=True)
    chunks = [json.loads(d) for _, d in sse(r) if d != "[DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_openai_stream_framing_with_usage(http, oai):
    oai.behaviour = Behaviour(reply="Hi there friend")
    r = chat(http, oai, {"stream": True, "stream_options": {"include_usage": True}}, stream=True)
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["transfer-encoding"] == "chunked"
    raw = r.content
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b"" and blocks[-2] == b"data: [DONE]"
    assert all(b.startswith(b"data: ") and b"\n" not in b for b in blocks[:-1])
    chunks = [json.loads(b[6:]) for b in blocks[:-2]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o-mini"
               and c["system_fingerprint"] == "fp_fake" and "created" in c for c in chunks)
    role = {"role": "assistant", "content": "", "refusal": None}
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": role, "logprobs": None, "finish_reason": None}]
    assert [c["choices"][0]["delta"] for c in chunks[1:4]] == [
        {"content": "Hi"}, {"content": " there"}, {"content": " friend"}]
    assert chunks[4]["choices"][0]["delta"] == {}
    assert chunks[4]["choices"][0]["finish_reason"] == "stop"
    assert all(c["usage"] is None for c in chunks[:5])
    assert chunks[5]["choices"] == []
    assert chunks[5]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert wait_for(lambda: oai.stream_finished == 1) and oai.disconnects == 0


def test_openai_stream_without_usage_and_keep_alive(oai):
    conn = HTTPConnection("127.0.0.1", int(oai.url.rsplit(":", 1)[1]), timeout=5)
    headers = {"Authorization": f"Bearer {OPENAI_KEY}", "Content-Type": "application/json"}
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    sock = conn.sock
    text = conn.getresponse().read().decode()
    assert "usage" not in text and text.endswith("data: [DONE]\n\n")
    conn.request("GET", "/v1/models", headers=headers)
    assert conn.getresponse().status == 200
    assert conn.sock is sock  # both answers left the connection open for reuse
    conn.close()


def test_openai_status_retry_after_and_queue(http, oai):
    oai.queue = [Behaviour(status=429, retry_after=2), Behaviour(status=503, retry_after=0.5)]
    r = chat(http, oai)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-limit-requests"] and r.headers["x-ratelimit-reset-requests"]
    assert r.json() == {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                  "param": None, "code": "rate_limit_exceeded"}}
    r = chat(http, oai)
    assert r.status_code == 503 and r.headers["retry-after"] == "0.5"
    assert r.json()["error"] == {
        "message": "The server had an error while processing your request.",
        "type": "server_error", "param": None, "code": None}
    assert chat(http, oai).status_code == 200 and oai.queue == []


def test_openai_hang_times_out_and_stop_is_prompt(http):
    server = FakeOpenAI().start()
    server.behaviour = Behaviour(hang=True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        chat(http, server, timeout=(1, 0.2))
    outcome = []

    def hung_client():  # learns about the stop as a dropped connection
        try:
            chat(http, server)
        except requests.exceptions.ConnectionError as exc:
            outcome.append(exc)

    client = threading.Thread(target=hung_client)
    client.start()
    assert wait_for(lambda: len(server.requests) == 2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.5
    client.join(2)
    assert not client.is_alive() and len(outcome) == 1


def test_openai_fail_after_chunks_drops_connection(http, oai):
    oai.behaviour = Behaviour(reply="one two three four", fail_after_chunks=2)
    r = chat(http, oai, {"stream": True}, stream=True)
    seen = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for line in r.iter_lines(decode_unicode=True):
            seen.append(line)
    contents = [json.loads(x[6:])["choices"][0]["delta"].get("content") for x in seen if x]
    assert contents == ["", "one", " two"]
    assert oai.stream_finished == 0


def test_openai_garbage(http, oai):
    oai.behaviour = Behaviour(garbage=True)
    r = chat(http, oai)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    events = sse(chat(http, oai, {"stream": True}, stream=True))
    assert events and events[-1][1] == "[DONE]"
    for _, data in events[:-1]:
        with pytest.raises(ValueError):
            json.loads(data)


def test_openai_first_token_delay(http, oai):
    oai.behaviour = Behaviour(first_token_delay=0.3)
    started = time.monotonic()
    r = chat(http, oai, {"stream": True}, stream=True)
    assert time.monotonic() - started < 0.2  # headers (and the role chunk) come at once
    first_words = (line for line in r.iter_lines() if b'"content": "Hello' in line)
    assert next(first_words)
    assert time.monotonic() - started >= 0.3
    r.close()
    started = time.monotonic()
    assert chat(http, oai).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_openai_disconnect_is_counted(http, oai):
    oai.behaviour = Behaviour(reply="word " * 50, chunk_delay=0.05)
    r = chat(http, oai, {"stream": True}, stream=True)
    assert next(r.iter_lines())
    r.close()
    assert wait_for(lambda: oai.disconnects == 1, timeout=1.0)
    assert oai.stream_finished == 0


def test_openai_reset(http, oai):
    oai.behaviour = Behaviour(status=500)
    oai.queue.append(Behaviour())
    chat(http, oai)
    oai.reset()
    assert oai.requests == [] and oai.queue == [] and oai.behaviour == Behaviour()
    assert oai.disconnects == 0 and oai.stream_finished == 0


def test_official_openai_client(oai):
    client = openai.OpenAI(base_url=oai.url + "/v1", api_key=OPENAI_KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping pong"}])
    assert completion.choices[0].message.content == "Hello from openai. You said: ping pong"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 2 + 7

    oai.behaviour = Behaviour(reply="streamed words here")
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "go"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed words here"
    assert chunks[-1].usage.completion_tokens == 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    oai.behaviour = Behaviour(status=429, retry_after=1)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    oai.behaviour = Behaviour()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    bad = openai.OpenAI(base_url=oai.url + "/v1", api_key="sk-bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    client.close()
    bad.close()


# -- Anthropic ---------------------------------------------------------------------------------


def test_anthropic_models(http, ant):
    r = http.get(ant.url + "/v1/models", headers=ANTHROPIC_HEADERS)
    assert r.status_code == 200
    assert r.json() == {"data": [
        {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5",
         "created_at": "2025-01-01T00:00:00Z"},
        {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5",
         "created_at": "2025-01-01T00:00:00Z"}],
        "has_more": False, "first_id": "claude-sonnet-4-5", "last_id": "claude-haiku-4-5"}


def test_anthropic_auth_and_version(http, ant):
    r = messages(http, ant, headers={**ANTHROPIC_HEADERS, "x-api-key": "sk-ant-wrong"})
    assert r.status_code == 401
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["request_id"].startswith("req_") and body["request_id"] == r.headers["request-id"]
    r = messages(http, ant, headers={"x-api-key": "sk-ant-fake"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in r.json()["error"]["message"]


@pytest.mark.parametrize("body, status", [
    ({"max_tokens": None}, 400),
    ({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}, 400),
    ({"messages": [{"role": "assistant", "content": "x"}]}, 400),
    ({"messages": []}, 400),
    ({"model": "claude-9"}, 404),
])
def test_anthropic_validation(http, ant, body, status):
    r = messages(http, ant, body)
    assert r.status_code == status
    expected = "not_found_error" if status == 404 else "invalid_request_error"
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == expected
    assert r.json()["request_id"] == r.headers["request-id"]


def test_anthropic_non_stream_and_max_tokens(http, ant):
    r = messages(http, ant, {"system": [{"type": "text", "text": "be nice"}], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "last words"}]})
    body = r.json()
    assert body["id"].startswith("msg_")
    assert {k: body[k] for k in ("type", "role", "model", "stop_reason", "stop_sequence")} == {
        "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "stop_reason": "end_turn", "stop_sequence": None}
    reply = "Hello from anthropic. You said: last words"
    assert body["content"] == [{"type": "text", "text": reply}]
    assert body["usage"] == {"input_tokens": 6, "output_tokens": 7}
    ant.behaviour = Behaviour(reply="a b c d")
    body = messages(http, ant, {"max_tokens": 2}).json()
    assert body["content"][0]["text"] == "a b" and body["stop_reason"] == "max_tokens"
    assert body["usage"]["output_tokens"] == 2


def test_anthropic_stream_event_sequence(http, ant):
    ant.behaviour = Behaviour(reply="Hi there friend")
    r = messages(http, ant, {"stream": True, "max_tokens": 2}, stream=True)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    data = [json.loads(d) for _, d in events]
    assert [d["type"] for d in data] == names
    message = data[0]["message"]
    assert message["id"].startswith("msg_") and message["content"] == []
    assert message["stop_reason"] is None
    assert message["usage"] == {"input_tokens": 2, "output_tokens": 1}
    assert data[1] == {"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}
    assert [d["delta"] for d in data[3:5]] == [{"type": "text_delta", "text": "Hi"},
                                               {"type": "text_delta", "text": " there"}]
    assert data[5] == {"type": "content_block_stop", "index": 0}
    assert data[6] == {"type": "message_delta", "usage": {"output_tokens": 2},
                       "delta": {"stop_reason": "max_tokens", "stop_sequence": None}}
    assert wait_for(lambda: ant.stream_finished == 1)


def test_anthropic_status_retry_after(http, ant):
    ant.queue = [Behaviour(status=429, retry_after=3), Behaviour(status=529),
                 Behaviour(status=500)]
    r = messages(http, ant)
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert r.json()["error"]["type"] == "rate_limit_error"
    r = messages(http, ant)
    assert r.status_code == 529
    assert r.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert messages(http, ant).json()["error"]["type"] == "api_error"


def test_anthropic_fail_after_chunks_sends_error_event(http, ant):
    ant.behaviour = Behaviour(reply="one two three", fail_after_chunks=1)
    events = sse(messages(http, ant, {"stream": True}, stream=True))
    assert [n for n, _ in events] == ["message_start", "content_block_start", "ping",
                                      "content_block_delta", "error"]
    assert json.loads(events[-1][1]) == {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}
    assert ant.stream_finished == 0


def test_anthropic_garbage(http, ant):
    ant.behaviour = Behaviour(garbage=True)
    r = messages(http, ant)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    events = sse(messages(http, ant, {"stream": True}, stream=True))
    assert events
    for _, data in events:
        with pytest.raises(ValueError):
            json.loads(data)


def test_anthropic_hang(http, ant):
    ant.behaviour = Behaviour(hang=True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        messages(http, ant, timeout=(1, 0.2))
    assert ant.requests[0]["json"]["model"] == "claude-haiku-4-5"


def test_anthropic_first_token_delay_after_preamble(http, ant):
    ant.behaviour = Behaviour(first_token_delay=0.3)
    started = time.monotonic()
    r = messages(http, ant, {"stream": True}, stream=True)
    lines = r.iter_lines(decode_unicode=True)
    assert next(lines) == "event: message_start"
    assert time.monotonic() - started < 0.2
    for line in lines:
        if line == "event: content_block_delta":
            break
    assert time.monotonic() - started >= 0.3
    r.close()


def test_anthropic_disconnect_is_counted(http, ant):
    ant.behaviour = Behaviour(reply="word " * 50, chunk_delay=0.05)
    r = messages(http, ant, {"stream": True}, stream=True)
    assert next(r.iter_lines())
    r.close()
    assert wait_for(lambda: ant.disconnects == 1, timeout=1.0)
    assert ant.stream_finished == 0
