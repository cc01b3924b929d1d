"""Chat end to end: gunicorn (gevent workers, the default) on PostgreSQL and Redis, with the
`local` provider and fake OpenAI and Anthropic servers on 127.0.0.1, called over real HTTP,
by the official `openai` package among others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from tests.fakes.llm_servers import Behaviour, FakeAnthropic, FakeOpenAI
from tests.test_e2e_gunicorn import NO_PROXY, ROOT, deployed

API = "/api/v0.2"


@pytest.fixture(scope="module")
def fakes():
    with FakeOpenAI() as fake_openai, FakeAnthropic() as fake_anthropic:
        yield fake_openai, fake_anthropic


@pytest.fixture(scope="module")
def chat_deployment(fakes, postgres, redis_url, tmp_path_factory):
    fake_openai, fake_anthropic = fakes
    directory = tmp_path_factory.mktemp("e2e-chat")
    with deployed(
        directory,
        postgres.create(),
        REDIS_URL=redis_url,
        OPENAI_API_KEY=fake_openai.api_key,
        OPENAI_BASE_URL=fake_openai.url + "/v1",
        ANTHROPIC_API_KEY=fake_anthropic.api_key,
        ANTHROPIC_BASE_URL=fake_anthropic.url,
        CHAT_STREAM_KEEPALIVE="0.3",
        LLM_READ_TIMEOUT="10",
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_fakes(fakes):
    for fake in fakes:
        fake.reset()


def sse_events(response: requests.Response):
    """(event name or None, data) per event, plus ("comment", text) for comments."""
    event, data = None, []
    for raw in response.iter_lines(chunk_size=None, decode_unicode=True):
        if raw == "":
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif raw.startswith(":"):
            yield "comment", raw[1:].strip()
        elif raw.startswith("event:"):
            event = raw[6:].strip()
        elif raw.startswith("data:"):
            data.append(raw[5:].strip())


def post_chat(deployment, body: dict, *, stream: bool = False, timeout: float = 15) -> requests.Response:
    return requests.post(
        deployment.server.url + API + "/chat", json=body, stream=stream, timeout=timeout,
        headers={"X-API-Key": deployment.admin_key}, proxies=NO_PROXY,
    )


def test_official_openai_client_works_unchanged(chat_deployment, fakes):
    fake_openai, _ = fakes
    client = openai.OpenAI(
        base_url=chat_deployment.server.url + "/v1", api_key=chat_deployment.admin_key, max_retries=0
    )
    ids = {model.id for model in client.models.list()}
    assert {"gaia-local", "gpt-4o-mini", "claude-haiku-4-5", "persona:Mu"} <= ids

    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi there"}]
    )
    assert completion.choices[0].message.content == "Hello from openai. You said: Hi there"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens

    streamed = client.chat.completions.create(
        model="claude-haiku-4-5", messages=[{"role": "user", "content": "Stream please"}],
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from anthropic. You said: Stream please"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(text.split())

    persona = client.chat.completions.create(
        model="persona:Mu", messages=[{"role": "user", "content": "Who are you?"}]
    )
    assert persona.model == "persona:Mu" and persona.choices[0].message.content

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    bad = openai.OpenAI(base_url=chat_deployment.server.url + "/v1", api_key="gaia_local_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_chat_streams_through_gunicorn_and_is_stored(chat_deployment, fakes):
    fake_openai, _ = fakes
    fake_openai.behaviour = Behaviour(first_token_delay=0.8)
    response = post_chat(chat_deployment, {"message": "Tell me", "model": "gpt-4o", "stream": True}, stream=True)
    assert response.status_code == 200
    assert response.headers["X-Accel-Buffering"] == "no"
    events = list(sse_events(response))
    assert ("comment", "keepalive") in events[:3], events[:3]
    data = [json.loads(d) for name, d in events if name is None and d != "[DONE]"]
    assert events[-1] == (None, "[DONE]")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in data) == (
        "Hello from openai. You said: Tell me"
    )
    conversation_id = data[-1]["conversation_id"]

    stored = requests.get(
        chat_deployment.server.url + f"{API}/conversations/{conversation_id}",
        headers={"X-API-Key": chat_deployment.admin_key}, proxies=NO_PROXY, timeout=10,
    )
    assert stored.status_code == 200, stored.text
    assert [m["role"] for m in stored.json()["messages"]] == ["user", "assistant"]


def test_client_disconnect_stops_the_provider_call(chat_deployment, fakes):
    fake_openai, _ = fakes
    fake_openai.behaviour = Behaviour(reply=" ".join(["word"] * 200), chunk_delay=0.05)
    response = post_chat(chat_deployment, {"message": "Long one", "model": "gpt-4o", "stream": True}, stream=True)
    assert response.status_code == 200
    for name, data in sse_events(response):
        if name is None and '"content":"word"' in data:
            break
    response.close()
    deadline = time.monotonic() + 5
    while fake_openai.disconnects == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_openai.disconnects == 1
    assert fake_openai.stream_finished == 0


def test_open_streams_do_not_block_other_requests(chat_deployment, fakes):
    """60 streams wait on a slow provider at once (gevent workers), and other requests,
    chat included, are still answered at once. (The 500-stream figure is in bench/.)"""
    fake_openai, _ = fakes
    # Slow answers, but a quick model list: each worker lists the models on its first use.
    fake_openai.behaviour = Behaviour(first_token_delay=5.0, models_delay=0.0)
    opened = []
    lock = threading.Lock()

    def slow_stream(index: int) -> str:
        response = post_chat(chat_deployment, {"message": f"slow {index}", "model": "gpt-4o", "stream": True},
                             stream=True, timeout=30)
        with lock:
            opened.append(index)
        text = "".join(
            json.loads(d)["choices"][0]["delta"].get("content", "")
            for name, d in sse_events(response) if name is None and d != "[DONE]"
        )
        return text

    with ThreadPoolExecutor(max_workers=60) as pool:
        futures = [pool.submit(slow_stream, i) for i in range(60)]
        deadline = time.monotonic() + 20

        def chat_calls() -> int:
            return sum(r["path"].endswith("/chat/completions") for r in fake_openai.requests)

        while chat_calls() < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert chat_calls() == 60, chat_deployment.server.log()[-3000:]  # all wait on the provider
        quick = post_chat(chat_deployment, {"message": "meanwhile", "model": "gaia-local"}, timeout=5)
        live = requests.get(chat_deployment.server.url + "/health/live", proxies=NO_PROXY, timeout=5)
        # Answered while every stream was still waiting for its first token.
        finished_meanwhile = fake_openai.stream_finished
        results = [future.result(timeout=30) for future in futures]
    assert quick.status_code == 200 and live.status_code == 200
    assert finished_meanwhile == 0
    assert all(text.startswith("Hello from openai") for text in results)


def test_smoke_script_chat_check_passes(chat_deployment):
    result = subprocess.run(
        [sys.executable, "scripts/smoke_test.py", "--url", chat_deployment.server.url,
         "--api-key", chat_deployment.admin_key, "chat", "providers", "models"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "NO_PROXY": "*"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "streamed" in result.stdout
