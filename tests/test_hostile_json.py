"""Hostile JSON thrown at every JSON endpoint the OpenAPI document lists, on SQLite and
PostgreSQL: deep nesting, huge and non-finite numbers, NUL and lone surrogates in every
string and key, wrong types in every field, duplicate keys, bytes that are not UTF-8.

The only acceptable answers are a 2xx, or a 4xx in the error shape of its API (problem+json,
or OpenAI's error object under /v1). A 5xx, a traceback or another shape fails.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaia_app import accounts, create_app
from gaia_app.extensions import db
from gaia_app.state import gaia

EXAMPLES_PER_ENDPOINT = 40

# -- what hostile JSON looks like -------------------------------------------------------------

NASTY_TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy", "\ud83d", "\u2028", "\ufeff", "", " ",
                     "1e400", "NaN", "null", "true", "../../etc/passwd", "%00", "'; DROP TABLE users;--"]),
)
# Written into the body as raw JSON text: literals Python's json would never emit.
RAW_NUMBERS = st.sampled_from([
    "NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1e-400", "1" * 5000, "-" + "9" * 400,
    "9223372036854775808", "9223372036854775807", "-0", "0.0000001", "1.5", "10E2",
])


def _as_json(value) -> str:
    return json.dumps(value, ensure_ascii=True, allow_nan=False)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), NASTY_TEXT,
).map(_as_json) | RAW_NUMBERS


def _containers(children):
    objects = st.lists(st.tuples(NASTY_TEXT.map(_as_json), children), max_size=4).map(
        lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}")
    arrays = st.lists(children, max_size=4).map(lambda items: "[" + ",".join(items) + "]")
    return objects | arrays


VALUES = st.recursive(SCALARS, _containers, max_leaves=12)
DEEP = st.integers(min_value=30, max_value=3000).map(lambda depth: "[" * depth + "]" * depth)


def bodies(field_names: list[str]):
    """An object of the endpoint's own fields (and strangers) holding hostile values, or a
    whole body that is hostile in itself."""
    names = st.sampled_from(field_names or ["x"]) | NASTY_TEXT
    fields = st.lists(st.tuples(names.map(_as_json), VALUES | DEEP), max_size=6)
    objects = fields.map(lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}")
    duplicated = st.sampled_from(field_names or ["x"]).map(
        lambda name: "{%s:1,%s:\"again\"}" % (_as_json(name), _as_json(name)))
    return st.one_of(
        objects.map(str.encode),
        duplicated.map(str.encode),
        VALUES.map(str.encode),
        DEEP.map(lambda deep: ('{"x":' + deep + "}").encode()),
        st.binary(max_size=40),  # not UTF-8, not JSON
        st.just(b'{"\\ud800": 1}'),  # a lone surrogate as an escaped key
    )


HOSTILE_LITERALS = [
    "NaN", "Infinity", "-Infinity", "1e400", "1" * 5000, "9223372036854775808", '"\\u0000"',
    '"a\\u0000b"', '"\\ud800"', '"x\\udfffy"', "[" * 40 + "]" * 40, "[" * 3000 + "]" * 3000,
    '{"\\u0000": 1}', '{"\\ud800": 1}', "{}", "[]", "null", "true", "-1", "0.5", '""', '"x"',
    '"' + "x" * 70000 + '"',
]


def catalogue(field_names: list[str]) -> list[bytes]:
    """Every hostile literal in every field, and each field given twice: what random search
    might miss, sent every run."""
    found = [literal.encode() for literal in HOSTILE_LITERALS]
    for name in field_names or ["x"]:
        key = _as_json(name)
        found += [("{%s:%s}" % (key, literal)).encode() for literal in HOSTILE_LITERALS]
        found.append(("{%s:1,%s:2}" % (key, key)).encode())
    return found


# -- the endpoints ----------------------------------------------------------------------------


def _json_operations() -> list[tuple[str, str, list[str]]]:
    """(method, path, body field names) of every operation that reads a JSON body."""
    app = create_app({"DATABASE_URL": "sqlite://", "TESTING": True}, environ={})
    spec = app.test_client().get("/api/v0.2/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    found = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            body = isinstance(operation, dict) and operation.get("requestBody")
            if not body:
                continue
            schema = body["content"]["application/json"]["schema"]
            if "$ref" in schema:
                schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
            found.append((method.upper(), path, sorted(schema.get("properties", {}))))
    return found


class Caller:
    """An admin with a key, and objects of their own for paths that name one."""

    def __init__(self, app) -> None:
        self.app = app
        with app.app_context():
            admin = accounts.create_user("hostile-admin@example.com", is_admin=True)
            _, self.key = accounts.create_api_key(admin, name="hostile", environment="local")
            other = accounts.create_user("someone@example.com")
            spare, _ = accounts.create_api_key(admin, name="spare", environment="local")
            db.session.commit()
            self.ids = {"user_id": str(other.id), "key_id": str(spare.id)}
        client = app.test_client()
        persona = client.post("/api/v0.2/personas", headers=self.headers,
                              json={"name": "Target", "system_prompt": "Be a target."})
        assert persona.status_code == 201, persona.get_data(as_text=True)
        self.ids["persona_id"] = persona.get_json()["id"]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def url(self, path: str) -> str:
        for name, value in self.ids.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, path
        return path


def assert_answer_in_its_shape(response, path: str) -> None:
    status = response.status_code
    text = response.get_data(as_text=True)
    assert status < 500, f"{status}: {text[:500]}"
    assert "Traceback" not in text
    if status < 400:
        return
    if path.startswith("/v1/"):
        assert response.content_type == "application/json", response.content_type
        error = json.loads(text)["error"]
        assert isinstance(error["message"], str) and error["message"]
    else:
        assert response.content_type == "application/problem+json", response.content_type
        problem = json.loads(text)
        assert problem["status"] == status and problem["title"] and problem["detail"]


JSON_OPERATIONS = _json_operations()


@pytest.mark.parametrize("method, path, field_names", JSON_OPERATIONS,
                         ids=[f"{method} {path}" for method, path, _ in JSON_OPERATIONS])
def test_hostile_json_gets_a_2xx_or_a_4xx_in_its_shape(app, method, path, field_names):
    caller = Caller(app)
    client = app.test_client()
    url = caller.url(path)
    # Each example may change what the next one sees (a renamed persona, a rotated key):
    # answers must hold whatever the state, which is the point.
    gaia(app).authenticator.cache.clear()

    @settings(max_examples=EXAMPLES_PER_ENDPOINT, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(body=bodies(field_names))
    def answers_in_its_shape(body: bytes):
        response = client.open(url, method=method, data=body,
                               headers={**caller.headers, "Content-Type": "application/json"})
        assert_answer_in_its_shape(response, path)

    for body in catalogue(field_names):
        response = client.open(url, method=method, data=body,
                               headers={**caller.headers, "Content-Type": "application/json"})
        assert_answer_in_its_shape(response, path)
    answers_in_its_shape()
