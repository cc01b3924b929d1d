"""`POST /v1/embeddings`, by hand and with the official `openai` SDK.

Two loopback fakes of OpenAI's API serve the OpenAI-kind providers: `openai` (first in
preference order) and `ollama` (which lists its embedding model among its chat models, as
Ollama does); a fake Anthropic serves `anthropic`, which has no embeddings. The built-in
`local` provider serves `gaia-local-embed`.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import subprocess
import sys

import openai
import pytest
import requests
from sqlalchemy import select

from gaia_app.extensions import db
from gaia_app.models import UsageEvent
from gaia_app.providers import ProviderRegistry, embeddings
from gaia_app.providers.base import ProviderDeclaration
from gaia_app.providers.openai_compat import OPENAI_DEFAULT_BASE_URL, OpenAICompatibleProvider
from gaia_app.state import gaia
from tests.conftest import make_app, upgrade
from tests.fakes.embedding_servers import FakeOpenAIEmbeddings
from tests.fakes.loopback import served
from tests.fakes.llm_servers import Behaviour, FakeAnthropic
from tests.test_openai_compat import (  # noqa: F401 - fixtures
    _key,
    auth,
    base_url,
    key,
    no_proxy,
    openai_error_of,
    sdk,
)

KEY_A = "sk-fake-openai"
KEY_B = "sk-ant-fake"
LOCAL = "gaia-local-embed"
SMALL = "text-embedding-3-small"
NOMIC = "nomic-embed-text"
TEXTS = ["The knight rode his horse to the castle.", "Lanterns glow along the river at night."]


oai = served(FakeOpenAIEmbeddings, api_key=KEY_A)
ollama = served(FakeOpenAIEmbeddings, models=("llama3.2", NOMIC), api_key="", embedding_models={NOMIC: (768, False)})
ant = served(FakeAnthropic, models=("claude-haiku-4-5",), api_key=KEY_B)


@pytest.fixture(scope="module")
def app(no_proxy, oai, ollama, ant, tmp_path_factory):
    app = make_app(
        f"sqlite:///{tmp_path_factory.mktemp('v1-embeddings') / 'x.db'}", tmp_path_factory,
        OPENAI_API_KEY=KEY_A, OPENAI_BASE_URL=oai.url + "/v1", OLLAMA_BASE_URL=ollama.url,
        ANTHROPIC_API_KEY=KEY_B, ANTHROPIC_BASE_URL=ant.url,
        LLM_CONNECT_TIMEOUT="1", LLM_READ_TIMEOUT="2",
    )
    upgrade(app)
    gaia(app).providers.models()  # the fakes' model lists, fetched once now
    return app


@pytest.fixture(autouse=True)
def _fresh(app, oai, ollama, ant):
    yield
    for fake in (oai, ollama, ant):
        fake.reset()
    gaia(app).providers.clear_cooldowns()
    gaia(app).usage.discard_pending()


@pytest.fixture
def client(app):
    return app.test_client()


def embed(client, auth, body=None, **fields):
    return client.post("/v1/embeddings", json={"model": LOCAL, "input": TEXTS, **fields} if body is None else body,
                       headers=auth)


def vectors(response) -> list[list[float]]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [item["embedding"] for item in response.get_json()["data"]]


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def embedding_calls(fake) -> list[dict]:
    return [r["json"] for r in fake.requests if r["path"] == "/v1/embeddings"]


def from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# -- local ----------------------------------------------------------------------------------


def test_local_answers_in_openai_s_shape(client, auth):
    response = embed(client, auth)
    body = response.get_json()
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list" and body["model"] == LOCAL
    assert [(item["object"], item["index"]) for item in body["data"]] == [("embedding", 0), ("embedding", 1)]
    for vector in vectors(response):
        assert len(vector) == embeddings.LOCAL_DIMENSIONS
        assert math.isclose(sum(v * v for v in vector), 1.0, abs_tol=1e-5)
    words = sum(len(text.replace(".", " .").split()) for text in TEXTS)
    assert body["usage"] == {"prompt_tokens": words, "total_tokens": words}


def test_local_is_deterministic_across_calls_and_processes(client, auth):
    first, second = vectors(embed(client, auth)), vectors(embed(client, auth))
    assert first == second and first[0] != first[1]
    script = ("import json; from gaia_app.providers.embeddings import local_embedding; "
              f"print(json.dumps(local_embedding({TEXTS[0]!r})))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.getcwd()}
    other = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == first[0]


@pytest.mark.parametrize("text, paraphrase, unrelated", [
    ("The knight rode his horse to the castle.", "A knight riding a horse toward the castle",
     "Quarterly tax forms are due in April."),
    ("Where is the blacksmith's forge?", "Where can I find the blacksmith forge",
     "The soup needs more salt and pepper."),
    ("The dragon sleeps on a pile of gold.", "A sleeping dragon lies on its gold pile",
     "Remember to water the tomatoes every morning."),
])
def test_local_puts_a_paraphrase_nearer_than_an_unrelated_text(client, auth, text, paraphrase, unrelated):
    base, near, far = vectors(embed(client, auth, input=[text, paraphrase, unrelated]))
    assert cosine(base, near) > cosine(base, far) + 0.2


def test_local_dimensions_keep_the_first_components_normalised_again(client, auth):
    full = vectors(embed(client, auth))[0]
    for size in (1, 16, 64, 255):
        short = vectors(embed(client, auth, dimensions=size))[0]
        norm = math.sqrt(sum(v * v for v in full[:size]))
        assert len(short) == size
        assert short == pytest.approx([v / norm for v in full[:size]], abs=1e-6)


def test_local_base64_carries_the_same_float32_values(client, auth):
    floats = vectors(embed(client, auth, encoding_format="float"))
    encoded = vectors(embed(client, auth, encoding_format="base64"))
    assert all(isinstance(item, str) for item in encoded)
    assert [from_base64(item) for item in encoded] == floats


def test_local_embeds_token_ids(client, auth):
    single = vectors(embed(client, auth, input=[15339, 1917, 0]))
    several = vectors(embed(client, auth, input=[[15339, 1917, 0], [9906, 1917]]))
    assert single[0] == several[0] and several[0] != several[1]
    assert len(several[1]) == embeddings.LOCAL_DIMENSIONS
    assert embed(client, auth, input=[[1, 2, 3], [4]]).get_json()["usage"]["prompt_tokens"] == 4


def test_local_takes_the_largest_batch_openai_allows(client, auth):
    response = embed(client, auth, input=[f"word {n}" for n in range(2048)], dimensions=8)
    assert len(vectors(response)) == 2048


# -- the official SDK ---------------------------------------------------------------------


def test_sdk_default_base64_is_decoded_into_gaia_s_float_vectors(client, auth, sdk):
    expected = vectors(embed(client, auth))
    answer = sdk.embeddings.create(model=LOCAL, input=TEXTS)
    assert [item.embedding for item in answer.data] == expected
    assert answer.model == LOCAL and answer.usage.prompt_tokens == answer.usage.total_tokens > 0
    as_float = sdk.embeddings.create(model=LOCAL, input=TEXTS, encoding_format="float")
    assert [item.embedding for item in as_float.data] == expected
    as_text = sdk.embeddings.create(model=LOCAL, input=TEXTS[0], encoding_format="base64")
    assert from_base64(as_text.data[0].embedding) == expected[0]


def test_sdk_dimensions_and_token_arrays(sdk):
    answer = sdk.embeddings.create(model=f"local/{LOCAL}", input=[[1, 2, 3], [4, 5]], dimensions=32)
    assert [len(item.embedding) for item in answer.data] == [32, 32]
    assert answer.usage.prompt_tokens == 5


def test_sdk_request_reaches_the_provider_as_sent_and_comes_back_as_it_came(sdk, oai):
    answer = sdk.embeddings.create(model=SMALL, input=["a quiet path", "east"], dimensions=64, user="player-7")
    assert embedding_calls(oai) == [{"model": SMALL, "input": ["a quiet path", "east"], "user": "player-7",
                                     "dimensions": 64, "encoding_format": "base64"}]
    assert [item.embedding for item in answer.data] == [oai.vector(SMALL, "a quiet path", 64),
                                                        oai.vector(SMALL, "east", 64)]
    assert answer.model == SMALL and answer.usage.prompt_tokens == 4


def test_sdk_hears_provider_errors_with_their_code_and_param(sdk, oai):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.embeddings.create(model=SMALL, input="x", dimensions=5000)
    assert caught.value.code == "invalid_value" and caught.value.param == "dimensions"
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.embeddings.create(model="text-embedding-9", input="x")
    assert missing.value.code == "model_not_found"


# -- OpenAI-kind providers ------------------------------------------------------------------


def test_the_body_goes_through_as_sent_with_the_model_resolved(client, auth, oai):
    sent = {"model": f"openai/{SMALL}", "input": "the gate", "encoding_format": "float", "vendor_hint": {"a": 1}}
    response = embed(client, auth, sent)
    assert embedding_calls(oai) == [{**sent, "model": SMALL}]
    assert list(embedding_calls(oai)[0]) == list(sent)
    direct = requests.post(oai.url + "/v1/embeddings", json={**sent, "model": SMALL},
                           headers={"Authorization": f"Bearer {KEY_A}"}, timeout=5)
    assert response.status_code == 200 and response.data == direct.content
    assert vectors(response) == [oai.vector(SMALL, "the gate")]


@pytest.mark.parametrize("model, fake_name, sent_as", [
    (SMALL, "oai", SMALL),                     # listed by nobody: the first OpenAI-kind provider
    (NOMIC, "ollama", NOMIC),                  # listed by ollama (among its chat models)
    (f"ollama/{NOMIC}", "ollama", NOMIC),
    ("text-embedding-ada-002", "oai", "text-embedding-ada-002"),
])
def test_model_ids_find_their_provider(client, auth, model, fake_name, sent_as, request):
    fake = request.getfixturevalue(fake_name)
    response = embed(client, auth, model=model, input="hello there")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [call["model"] for call in embedding_calls(fake)] == [sent_as]
    assert vectors(response) == [fake.vector(sent_as, "hello there")]


@pytest.mark.parametrize("model, param, named", [
    ("anthropic/claude-haiku-4-5", "model", "anthropic"),
    ("claude-haiku-4-5", "model", "anthropic"),
    ("gaia-local", "model", "gaia-local"),
    ("local/gaia-local-mini", "model", "gaia-local-mini"),
    ("persona:Mu", "model", "persona"),
])
def test_what_cannot_embed_is_refused_without_calling_anyone(client, auth, oai, ollama, ant, model, param, named):
    error = openai_error_of(embed(client, auth, model=model), 400)
    assert error["param"] == param and named in error["message"]
    assert not embedding_calls(oai) and not embedding_calls(ollama)
    assert not [r for r in ant.requests if r["method"] == "POST"]


def test_an_unknown_local_model_is_404(client, auth):
    error = openai_error_of(embed(client, auth, model="local/gaia-local-embed-xl"), 404)
    assert error["code"] == "model_not_found" and LOCAL in error["message"]


@pytest.mark.parametrize("fields, status, code, param", [
    ({"dimensions": 4000}, 400, "invalid_value", "dimensions"),
    ({"model": "text-embedding-ada-002", "dimensions": 8}, 400, "invalid_value", "dimensions"),
    ({"input": " ".join(["word"] * 9000)}, 400, "context_length_exceeded", "input"),
    ({"model": "text-embedding-4"}, 404, "model_not_found", None),
    ({"model": "gpt-4o-mini"}, 400, None, "model"),  # OpenAI's 403: the model does not embed
])
def test_provider_errors_reach_the_client_with_code_and_param(client, auth, oai, fields, status, code, param):
    error = openai_error_of(embed(client, auth, **{"model": SMALL, "input": "x", **fields}), status)
    assert (error["code"], error["param"]) == (code, param)
    assert len(embedding_calls(oai)) == 1


def test_a_rate_limited_provider_is_relayed_and_then_left_alone(client, auth, oai):
    oai.behaviour = Behaviour(status=429, retry_after=3)
    response = embed(client, auth, model=SMALL)
    assert openai_error_of(response, 429)["code"] == "rate_limit_exceeded"
    assert response.headers["Retry-After"] == "3"
    oai.behaviour = Behaviour()
    again = embed(client, auth, model=SMALL)
    assert openai_error_of(again, 429) and int(again.headers["Retry-After"]) <= 3
    assert len(embedding_calls(oai)) == 1  # the pause it asked for is kept


@pytest.mark.parametrize("behaviour, status", [
    (Behaviour(status=500), 502),
    (Behaviour(garbage=True), 502),
    (Behaviour(first_token_delay=5), 504),
])
def test_provider_failures_are_gateway_errors(client, auth, oai, behaviour, status):
    oai.behaviour = behaviour
    openai_error_of(embed(client, auth, model=SMALL), status)


def test_an_answer_beyond_the_size_read_is_502(client, auth, monkeypatch):
    monkeypatch.setattr(embeddings, "MAX_ANSWER_BYTES", 4096)
    assert embed(client, auth, model=SMALL, input="x", dimensions=8).status_code == 200
    error = openai_error_of(embed(client, auth, model=SMALL, input="x"), 502)
    assert "4096 bytes" in error["message"]


def test_a_provider_refusing_gaia_s_key_is_502(client, auth, oai):
    oai.api_key = "sk-another"
    try:
        error = openai_error_of(embed(client, auth, model=SMALL), 502)
    finally:
        oai.api_key = KEY_A
    assert "credentials" in error["message"] and KEY_A not in error["message"]


# -- bad requests -------------------------------------------------------------------------


@pytest.mark.parametrize("body, param", [
    ({"input": "x"}, "model"),
    ({"model": "", "input": "x"}, "model"),
    ({"model": 5, "input": "x"}, "model"),
    ({"model": LOCAL}, "input"),
    ({"model": LOCAL, "input": ""}, "input"),
    ({"model": LOCAL, "input": []}, "input"),
    ({"model": LOCAL, "input": ["a", ""]}, "input[1]"),
    ({"model": LOCAL, "input": ["a"] * 2049}, "input"),
    ({"model": LOCAL, "input": [1, "a"]}, "input"),
    ({"model": LOCAL, "input": [[1], "a"]}, "input"),
    ({"model": LOCAL, "input": [True]}, "input"),
    ({"model": LOCAL, "input": [1.5]}, "input"),
    ({"model": LOCAL, "input": [-1]}, "input[0]"),
    ({"model": LOCAL, "input": [[3], []]}, "input[1]"),
    ({"model": LOCAL, "input": [[3], [2, -5]]}, "input[1][1]"),
    ({"model": LOCAL, "input": {"text": "x"}}, "input"),
    ({"model": LOCAL, "input": None}, "input"),
    ({"model": LOCAL, "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"model": LOCAL, "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": LOCAL, "input": "x", "dimensions": "8"}, "dimensions"),
    ({"model": LOCAL, "input": "x", "dimensions": True}, "dimensions"),
    ({"model": LOCAL, "input": "x", "dimensions": 257}, "dimensions"),
    ({"model": LOCAL, "input": "x", "user": 7}, "user"),
    ({"model": LOCAL, "input": "x", "vendor_hint": "x"}, "vendor_hint"),
    ({"model": SMALL, "input": ""}, "input"),
    ({"model": SMALL, "input": "x", "dimensions": -3}, "dimensions"),
])
def test_bad_input_is_400_naming_the_field(client, auth, oai, body, param):
    error = openai_error_of(embed(client, auth, body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert not embedding_calls(oai)


def test_a_body_that_is_no_json_object_is_refused(client, auth):
    assert openai_error_of(embed(client, auth, ["x"]), 400)["param"] is None
    not_json = client.post("/v1/embeddings", data="input=x", headers=auth, content_type="text/plain")
    openai_error_of(not_json, 415)


def test_huge_inputs_are_refused(client, auth):
    limit = client.application.config["MAX_CONTENT_LENGTH"]
    openai_error_of(embed(client, auth, input="word " * (limit // 5 + 10)), 413)
    error = openai_error_of(embed(client, auth, input=["short", "word " * 9000]), 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "input[1]")
    tokens = openai_error_of(embed(client, auth, input=[list(range(8193))]), 400)
    assert tokens["code"] == "context_length_exceeded"


def test_no_key_is_401_and_a_key_without_chat_scope_is_403(client, app):
    assert openai_error_of(embed(client, {}), 401)["code"] == "invalid_api_key"
    assets_only = {"Authorization": f"Bearer {_key(app, scopes=['assets'])}"}
    assert openai_error_of(embed(client, assets_only), 403)["code"] == "insufficient_scope"


# -- usage, models, document -----------------------------------------------------------------


def test_every_provider_call_leaves_a_usage_row(client, auth, app, oai):
    assert embed(client, auth).status_code == 200
    assert embed(client, auth, model=SMALL, input="one two three").status_code == 200
    oai.behaviour = Behaviour(status=500)
    embed(client, auth, model=SMALL)
    embed(client, auth, model=LOCAL, input="")  # refused before any provider: no row
    gaia(app).usage.flush()
    with app.app_context():
        rows = db.session.execute(select(UsageEvent).where(UsageEvent.kind == "embeddings")
                                  .order_by(UsageEvent.created_at)).scalars().all()
        found = [(r.provider, r.model, r.status, r.error_type, r.prompt_tokens, r.total_tokens,
                  r.completion_tokens, r.cost, r.stream) for r in rows]
        db.session.execute(UsageEvent.__table__.delete())
        db.session.commit()
    local_tokens = sum(len(text.replace(".", " .").split()) for text in TEXTS)
    assert found == [
        ("local", LOCAL, "ok", None, local_tokens, local_tokens, 0, 0.0, False),
        ("openai", SMALL, "ok", None, 3, 3, 0, None, False),
        ("openai", SMALL, "error", "unavailable", 0, 0, 0, None, False),
    ]


def test_the_model_list_shows_the_local_embedding_model(client, auth):
    listed = {entry["id"]: entry for entry in client.get("/v1/models", headers=auth).get_json()["data"]}
    assert listed[LOCAL]["owned_by"] == "local" and "gpt-4o-mini" in listed
    for model_id in (LOCAL, f"local/{LOCAL}"):
        found = client.get(f"/v1/models/{model_id}", headers=auth)
        assert found.status_code == 200 and found.get_json()["id"] == model_id
    openai_error_of(client.get("/v1/models/local/gaia-local-embed-xl", headers=auth), 404)
    # Chat does not take it, and says why.
    for model_id in (LOCAL, f"local/{LOCAL}"):
        chat = client.post("/v1/chat/completions", headers=auth,
                           json={"model": model_id, "messages": [{"role": "user", "content": "hi"}]})
        error = openai_error_of(chat, 400)
        assert error["param"] == "model" and "embedding model" in error["message"]
    problem = client.post("/api/v0.2/chat", headers=auth, json={"model": LOCAL, "message": "hi"})
    assert problem.status_code == 422 and problem.get_json()["errors"][0]["field"] == "model"
    assert "/v1/embeddings" in problem.get_json()["detail"]


def test_gaia_s_model_list_shows_embedding_models_by_capability(client, auth):
    def ids(query=""):
        return [m["id"] for m in client.get("/api/v0.2/models" + query, headers=auth).get_json()["models"]]

    assert LOCAL in ids() and SMALL not in ids()  # the fake is not OpenAI's own API
    assert ids("?capability=embeddings") == [LOCAL]
    assert LOCAL not in ids("?capability=chat") and "gaia-local" in ids("?capability=chat")
    assert ids("?provider=local&capability=embeddings") == [LOCAL]
    found = client.get(f"/api/v0.2/models/{LOCAL}", headers=auth)
    assert found.status_code == 200
    assert found.get_json()["capabilities"] == ["embeddings"] and found.get_json()["provider"] == "local"


def test_a_declared_embedding_model_is_not_a_default_for_chat(app):
    from blueprints.chat import routing
    from gaia_app.providers.base import ModelInfo

    with app.test_request_context():
        local = routing.registry().get("local")
        original = local.list_models
        embedder = ModelInfo(id="embed-first", name="E", provider="local", capabilities=("embeddings",))
        local.list_models = lambda: [embedder, *original()]
        try:
            assert routing._default_model(local).id != "embed-first"
        finally:
            local.list_models = original


def test_openai_s_own_embedding_models_are_known_without_asking():
    official = OpenAICompatibleProvider(ProviderDeclaration(
        id="openai", kind="openai", name="OpenAI", base_url=OPENAI_DEFAULT_BASE_URL, api_key="sk-x",
        list_models=False))
    registry = ProviderRegistry([official])
    known = {model.id: model for model in embeddings.embedding_models(official)}
    assert set(known) == set(embeddings.OPENAI_EMBEDDING_MODELS)
    assert known["text-embedding-3-large"].input_price_per_mtok == 0.13
    provider, model = embeddings.resolve(registry, "text-embedding-3-small")
    assert provider is official and model.input_price_per_mtok == 0.02
    with pytest.raises(embeddings.EmbeddingRefused) as refused:
        embeddings.resolve(registry, "openai/gpt-4o")  # a chat model Gaia knows: never sent
    assert refused.value.param == "model"
    assert embeddings.find_embedding_model(registry, "openai/text-embedding-3-small").provider == "openai"


def test_the_route_is_documented(client):
    spec = client.get("/api/v0.2/openapi.json").get_json()
    operation = spec["paths"]["/v1/embeddings"]["post"]
    assert operation["security"] and "requestBody" in operation
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/OpenAIEmbeddingList")
    assert {"401", "403"} <= set(operation["responses"])
