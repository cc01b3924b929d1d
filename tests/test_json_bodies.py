"""Request bodies are read one way (`gaia_app.json_body`): deep nesting, non-finite numbers and
unstorable text are refused with a clear 4xx before any view, in problem+json or, under /v1,
OpenAI's shape. None of them may reach a 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaia_app import json_body
from gaia_app.errors import APIError
from gaia_app.json_body import MAX_DEPTH
from tests.conftest import make_app, problem_of

CHAT = "/api/v0.2/chat"
COMPLETIONS = "/v1/chat/completions"
LOGIN = "/api/v0.2/auth/login"
PERSONAS = "/api/v0.2/personas"
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> str:
    return '{"message": ' + "[" * depth + "]" * depth + "}"


@pytest.fixture
def key(make):
    return {"X-API-Key": make.key(), **JSON}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 5000])
def test_deep_nesting_is_400_on_the_chat_api_and_login(client, key, depth):
    for path, headers in ((CHAT, key), (LOGIN, JSON)):
        body = problem_of(client.post(path, data=nested(depth), headers=headers), 400)
        assert "nested too deeply" in body["detail"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 5000])
def test_deep_nesting_is_an_openai_400_under_v1(client, key, depth):
    data = '{"model": "gaia-local", "messages": [{"role": "user", "content": "hi"}], "x": ' \
        + "[" * depth + "]" * depth + "}"
    response = client.post(COMPLETIONS, data=data, headers=key)
    assert response.status_code == 400 and response.content_type == "application/json"
    assert "nested too deeply" in response.get_json()["error"]["message"]


def test_nesting_within_the_bound_reaches_the_schema(client, key):
    # 30 levels of lists where a string belongs: the schema's own 422, not the depth rule.
    body = problem_of(client.post(CHAT, data=nested(MAX_DEPTH - 2), headers=key), 422)
    assert body["errors"][0]["field"] == "message"


def test_the_per_address_limit_counts_bodies_it_never_parses(database_url, tmp_path_factory, _session_app):
    client = make_app(database_url, tmp_path_factory, AUTH_RATE_LIMIT="3/minute").test_client()
    answers = [client.post(LOGIN, data=nested(5000), headers=JSON).status_code for _ in range(5)]
    assert answers == [400, 400, 400, 429, 429]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_numbers_are_refused_everywhere(client, key, number):
    persona = '{"name": "Odd", "system_prompt": "Be odd.", "traits": {"mood": %s}}' % number
    body = problem_of(client.post(PERSONAS, data=persona, headers=key), 400)
    assert "finite" in body["detail"]
    chat = '{"message": "hi", "temperature": %s}' % number
    assert "finite" in problem_of(client.post(CHAT, data=chat, headers=key), 400)["detail"]
    completion = '{"model": "gaia-local", "messages": [{"role": "user", "content": "hi"}], "temperature": %s}' % number
    response = client.post(COMPLETIONS, data=completion, headers=key)
    assert response.status_code == 400 and "finite" in response.get_json()["error"]["message"]
    assert client.get(PERSONAS, headers=key).get_json()["total"] == 1  # only Mu: nothing stored


@pytest.mark.parametrize("raw, field", [
    ('{"name": "Mu\\u0000x", "system_prompt": "p"}', "name"),
    ('{"name": "Lone \\ud800", "system_prompt": "p"}', "name"),
    ('{"name": "Ok", "system_prompt": "p", "traits": {"mood": "bad \\udfff"}}', "traits.mood"),
    ('{"name": "Ok", "system_prompt": "p", "traits": {"bad \\u0000 key": 1}}', "traits.bad \x00 key"),
    ('{"name": "Ok", "system_prompt": "p", "traits": {"list": ["fine", "nul \\u0000"]}}', "traits.list.1"),
])
def test_unstorable_text_anywhere_in_a_persona_is_422_naming_it(client, key, raw, field):
    body = problem_of(client.post(PERSONAS, data=raw, headers=key), 422)
    assert [e["field"] for e in body["errors"]] == [field]
    listed = client.get(PERSONAS, headers=key)
    assert listed.status_code == 200 and listed.get_json()["total"] == 1
    json.loads(listed.get_data(as_text=True))  # the listing stays valid JSON


def test_unstorable_text_under_v1_names_the_openai_param(client, key):
    data = '{"model": "gaia-local", "messages": [{"role": "user", "content": "a \\u0000 b"}]}'
    response = client.post(COMPLETIONS, data=data, headers=key)
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "messages[0].content"


def test_malformed_json_keeps_its_own_answers(client, key):
    assert problem_of(client.post(CHAT, data='{"message": ', headers=key), 400)["type"] == "/problems/malformed-json"
    assert problem_of(client.post(CHAT, data=b'{"message": "\xff"}', headers=key), 400)["type"] == "/problems/malformed-json"
    response = client.post(COMPLETIONS, data='{"model": ', headers=key)
    assert response.status_code == 400 and "parse" in response.get_json()["error"]["message"]


def test_a_route_that_takes_a_body_needs_one(client, key):
    for path in (CHAT, PERSONAS, "/api/v0.2/conversations"):
        body = problem_of(client.post(path, data="", headers=key), 400)
        assert "{}" in body["detail"]
    created = client.post("/api/v0.2/conversations", json={}, headers=key)
    assert created.status_code == 201  # an empty object is a choice: every field defaulted


def test_a_body_that_is_not_json_is_415_on_both_apis(client, key):
    plain = {"X-API-Key": key["X-API-Key"], "Content-Type": "text/plain"}
    problem_of(client.post(CHAT, data="hello", headers=plain), 415)
    problem_of(client.post("/api/v0.2/conversations", headers={"X-API-Key": key["X-API-Key"]}), 415)
    response = client.post(COMPLETIONS, data="hello", headers=plain)
    assert response.status_code == 415 and response.get_json()["error"]["message"]


def test_no_content_names_no_content_type(client, key):
    conversation = client.post("/api/v0.2/conversations", json={}, headers=key).get_json()
    deleted = client.delete(f"/api/v0.2/conversations/{conversation['id']}", headers=key)
    assert deleted.status_code == 204 and deleted.get_data() == b""
    assert "Content-Type" not in deleted.headers


@pytest.mark.parametrize("field, value", [
    ("max_tokens", 1.5), ("max_tokens", "10"), ("max_tokens", True), ("max_tokens", 10.0),
    ("temperature", "0.5"), ("temperature", True), ("stream", "yes"), ("stream", 1), ("fallback", "false"),
])
def test_chat_body_fields_take_json_types_not_coercions(client, key, field, value):
    body = problem_of(client.post(CHAT, json={"message": "hi", field: value}, headers=key), 422)
    assert [e["field"] for e in body["errors"]] == [field]


def test_account_body_fields_take_json_types(client, make):
    make.user("root@example.com", admin=True)
    admin = {"X-API-Key": make.key("root@example.com", scopes=["admin"])}
    body = problem_of(client.post("/api/v0.2/users", json={"email": "x@example.com", "is_admin": "true"},
                                  headers=admin), 422)
    assert body["errors"][0]["field"] == "is_admin"


@pytest.mark.parametrize("number", ["1" * 5000, "-" + "9" * 4400, "9223372036854775808", "-9223372036854775809"])
def test_integers_beyond_64_bits_are_refused_everywhere(client, key, number):
    """Thousands of digits raised ValueError inside the parser: a 500 before any check."""
    persona = '{"name": "Odd", "system_prompt": "Be odd.", "traits": {"mood": %s}}' % number
    assert "64 bits" in problem_of(client.post(PERSONAS, data=persona, headers=key), 400)["detail"]
    v1 = '{"model": "gaia-local", "max_tokens": %s, "messages": [{"role": "user", "content": "hi"}]}' % number
    response = client.post(COMPLETIONS, data=v1, headers=key)
    assert response.status_code == 400 and "64 bits" in response.get_json()["error"]["message"]


def test_the_64_bit_bounds_themselves_are_read(client, key):
    persona = {"name": "Edges", "system_prompt": "Be exact.",
               "traits": {"high": 2**63 - 1, "low": -(2**63)}}
    created = client.post(PERSONAS, data=json.dumps(persona), headers=key)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["traits"] == {"high": 2**63 - 1, "low": -(2**63)}


@pytest.mark.parametrize("body", [
    '{"name": "Twice", "name": "Again", "system_prompt": "x"}',
    '{"name": "Inner", "system_prompt": "x", "traits": {"mood": 1, "mood": 2}}',
])
def test_a_key_given_twice_is_refused_not_half_kept(client, key, body):
    detail = problem_of(client.post(PERSONAS, data=body, headers=key), 400)["detail"]
    assert "appears twice" in detail
    assert client.get(PERSONAS, headers=key).get_json()["total"] == 1  # only Mu


def test_a_key_given_twice_is_an_openai_400_under_v1(client, key):
    data = '{"model": "gaia-local", "model": "gaia-local-mini", "messages": [{"role": "user", "content": "hi"}]}'
    response = client.post(COMPLETIONS, data=data, headers=key)
    assert response.status_code == 400 and "appears twice" in response.get_json()["error"]["message"]


# -- the two walks agree -------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=60,
)


def _verdict(call):
    try:
        call()
    except APIError as error:
        return type(error), str(error)
    return None


@settings(max_examples=300, deadline=None)
@given(value=_json_values, wrap=st.integers(0, 40))
def test_a_body_without_escapes_is_judged_as_the_full_walk_judges_it(value, wrap):
    """Bodies with no `\\u` escape skip the text checks; the verdict stays the full walk's."""
    for _ in range(wrap):
        value = [value]
    text = json.dumps(value, ensure_ascii=False)
    decoded = text.encode("utf-8", "surrogatepass")
    full = _verdict(lambda: json_body._check(json.loads(text), False))
    assert _verdict(lambda: json_body.loads(decoded)) == full
    if "\\u" not in text and "\x00" not in text and full is None:
        assert json_body.loads(decoded) == json.loads(text)
