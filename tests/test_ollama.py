"""`ollama`: a local Ollama server through its OpenAI-compatible API (OLLAMA_BASE_URL)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gaia_app.config import load_settings
from tests.conftest import make_app
from tests.fakes.llm_servers import FakeOpenAI


@pytest.mark.parametrize("given", ["http://127.0.0.1:11434", "http://127.0.0.1:11434/", "http://127.0.0.1:11434/v1"])
def test_the_base_url_gets_ollamas_v1_path_once(given, tmp_path):
    settings = load_settings({"OLLAMA_BASE_URL": given}, tmp_path, Path("."))
    (ollama,) = [p for p in settings.llm.providers if p.id != "local"]
    assert (ollama.id, ollama.kind, ollama.base_url, ollama.api_key) == (
        "ollama", "openai", "http://127.0.0.1:11434/v1", None
    )


@pytest.fixture(scope="module")
def fake_ollama():
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    # Ollama needs no key: the fake accepts requests without Authorization.
    with FakeOpenAI(models=("llama3.2", "qwen2.5:7b"), api_key="") as server:
        yield server


def test_chat_through_ollama(database_url, tmp_path_factory, _session_app, fake_ollama, make):
    app = make_app(database_url, tmp_path_factory, OLLAMA_BASE_URL=fake_ollama.url)
    client = app.test_client()
    headers = {"X-API-Key": make.key()}
    listed = client.get("/api/v0.2/models?provider=ollama", headers=headers).get_json()
    assert {m["id"] for m in listed["models"]} == {"llama3.2", "qwen2.5:7b"}
    answer = client.post("/api/v0.2/chat", json={"message": "Hi", "model": "ollama/llama3.2"}, headers=headers)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["provider"], body["model"]) == ("ollama", "llama3.2")
    assert body["response"] == "Hello from openai. You said: Hi"
    sent = [r for r in fake_ollama.requests if r["method"] == "POST"][-1]
    assert sent["path"] == "/v1/chat/completions" and "authorization" not in sent["headers"]
    streamed = client.post("/api/v0.2/chat", json={"message": "Again", "model": "qwen2.5:7b", "stream": True},
                           headers=headers)
    assert streamed.status_code == 200 and streamed.get_data().endswith(b"data: [DONE]\n\n")
