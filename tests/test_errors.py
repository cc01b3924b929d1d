"""Every error is problem+json: routing errors, bad bodies, validation and crashes."""

import logging

import pytest
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from gaia_app import create_app
from gaia_app.state import gaia
from tests.conftest import problem_of


class ProbeSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=10))
    count = fields.Integer(load_default=1)
    tags = fields.List(fields.String(validate=validate.Length(max=3)))


@pytest.fixture(scope="module")
def probe_client(tmp_path_factory):
    """An app with one extra JSON endpoint and one that crashes, to exercise the handlers."""
    app = create_app(environ={}, config={
        "GAIA_INSTANCE_PATH": str(tmp_path_factory.mktemp("probe")),
        "MAX_CONTENT_LENGTH": "2048",
    })
    blp = Blueprint("probe", __name__, url_prefix="/probe")

    @blp.route("/echo", methods=["POST"])
    @blp.arguments(ProbeSchema)
    def echo(body):
        return body

    @blp.route("/crash")
    def crash():
        raise RuntimeError("secret internals: password=hunter2")

    gaia(app).api.register_blueprint(blp)
    return app.test_client()


def assert_problem(response, status):
    body = problem_of(response, status)
    assert set(body) >= {"type", "title", "status", "detail"}
    return body


def test_unknown_path_is_404(probe_client):
    body = assert_problem(probe_client.get("/no/such/thing"), 404)
    assert "/no/such/thing" in body["detail"]


def test_wrong_method_is_405_with_allow(probe_client):
    response = probe_client.delete("/probe/echo")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_oversized_body_is_413_before_it_is_read(probe_client):
    response = probe_client.post("/probe/echo", data=b"x" * 4096, content_type="application/json")
    body = assert_problem(response, 413)
    assert "2048" in body["detail"]
    # The limit holds on routes that never read a body, too.
    assert_problem(probe_client.post("/health/live", data=b"x" * 4096), 413)


@pytest.mark.parametrize("payload", [b"{", b"{'name': 'x'}", b"\xff\xfe", b'{"name": "x"'])
def test_malformed_json_is_400(probe_client, payload):
    response = probe_client.post("/probe/echo", data=payload, content_type="application/json")
    body = assert_problem(response, 400)
    assert body["type"] == "/problems/malformed-json"


def test_validation_errors_name_the_field(probe_client):
    response = probe_client.post("/probe/echo", json={"name": "x" * 50, "count": "many"})
    body = assert_problem(response, 422)
    fields_named = {e["field"] for e in body["errors"]}
    assert fields_named == {"name", "count"}
    assert all(e["location"] == "json" for e in body["errors"])
    assert "name" in body["detail"] and "count" in body["detail"]


def test_nested_validation_errors_have_paths(probe_client):
    response = probe_client.post("/probe/echo", json={"name": "ok", "tags": ["a", "toolong"]})
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == "tags.1"


def test_missing_required_field_and_wrong_top_level_type(probe_client):
    body = assert_problem(probe_client.post("/probe/echo", json={}), 422)
    assert body["errors"][0]["field"] == "name"
    assert_problem(probe_client.post("/probe/echo", json=[1, 2]), 422)


def test_valid_request_passes(probe_client):
    response = probe_client.post("/probe/echo", json={"name": "ok"})
    assert response.status_code == 200
    assert response.get_json() == {"name": "ok", "count": 1}


def test_unhandled_error_is_500_without_internals(probe_client, caplog):
    caplog.set_level(logging.ERROR)
    response = probe_client.get("/probe/crash")
    body = assert_problem(response, 500)
    text = response.get_data(as_text=True)
    assert "hunter2" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert "unhandled error" in caplog.text  # but the operator gets the whole story
    assert body["title"] == "Internal Server Error"
