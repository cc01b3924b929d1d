"""Errors carry their kind and field; the handlers render them without reading any message.

The first tests are the bugs this design fixed: a status or field chosen by matching words
in a message went wrong whenever the user's own input contained those words.
"""

from __future__ import annotations

import pytest

from gaia_app.errors import Conflict, InvalidField, NotFound, render
from gaia_app.state import gaia
from tests.conftest import make_app, problem_of

AUTH = "/api/v0.2/auth"
USERS = "/api/v0.2/users"
PASSWORD = "correct horse battery"


@pytest.fixture
def admin(make):
    make.user("root@example.com", admin=True)
    return {"X-API-Key": make.key("root@example.com", scopes=["admin", "chat"])}


@pytest.mark.parametrize("email", ["password@nowhere", "the password@example.com", "password"])
def test_an_invalid_email_that_mentions_password_blames_the_email(client, email):
    body = problem_of(client.post(f"{AUTH}/register", json={"email": email, "password": PASSWORD}), 422)
    assert [e["field"] for e in body["errors"]] == ["email"]


@pytest.mark.parametrize("email", ["already exists", "already exists@nowhere"])
def test_an_invalid_email_that_says_already_exists_is_no_conflict(client, email):
    body = problem_of(client.post(f"{AUTH}/register", json={"email": email, "password": PASSWORD}), 422)
    assert body["type"] == "/problems/validation" and body["errors"][0]["field"] == "email"


def test_a_real_duplicate_is_still_a_conflict(client):
    assert client.post(f"{AUTH}/register", json={"email": "a@example.com", "password": PASSWORD}).status_code == 201
    body = problem_of(client.post(f"{AUTH}/register", json={"email": "A@example.com", "password": PASSWORD}), 409)
    assert body["type"] == "/problems/conflict" and "errors" not in body


def test_a_weak_password_blames_the_password_whatever_the_email_says(client):
    body = problem_of(client.post(f"{AUTH}/register", json={"email": "expires_at@example.com",
                                                            "password": "short"}), 422)
    assert body["errors"][0]["field"] == "password"


def test_admin_user_creation_names_the_right_field(client, admin):
    body = problem_of(client.post(USERS, json={"email": "password@nowhere"}, headers=admin), 422)
    assert body["errors"][0]["field"] == "email"
    body = problem_of(client.post(USERS, json={"email": "ok@example.com", "password": "x"}, headers=admin), 422)
    assert body["errors"][0]["field"] == "password"


# -- /v1 speaks OpenAI's error shape on every path ----------------------------------------


def openai_error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_routing_404_under_v1_is_an_openai_error(client):
    error = openai_error_of(client.get("/v1/nothing-here"), 404)
    assert error["type"] == "invalid_request_error" and "/v1/nothing-here" in error["message"]


def test_routing_405_under_v1_is_an_openai_error(client):
    response = client.delete("/v1/models")
    openai_error_of(response, 405)
    assert "GET" in response.headers["Allow"]


def test_oversized_body_under_v1_is_an_openai_error(app, client):
    limit = app.config["MAX_CONTENT_LENGTH"]
    response = client.post("/v1/chat/completions", data=b"x" * (limit + 1),
                           headers={"Content-Type": "application/json"})
    openai_error_of(response, 413)


def test_elsewhere_routing_errors_stay_problem_json(client):
    problem_of(client.get("/api/v0.2/nothing-here"), 404)
    problem_of(client.get("/v1x"), 404)


def test_a_field_error_is_422_as_a_problem_and_400_with_its_param_under_v1(app):
    error = InvalidField("max_tokens", "Too many.")
    with app.test_request_context("/api/v0.2/chat"):
        response = render(error)
        assert response.status_code == 422
        assert response.get_json()["errors"] == [{"field": "max_tokens", "location": "json", "message": "Too many."}]
    with app.test_request_context("/v1/chat/completions"):
        response = render(error)
        assert response.status_code == 400
        assert response.get_json()["error"]["param"] == "max_tokens"


def test_kinds_carry_their_status_whatever_their_words(app):
    with app.test_request_context("/api/v0.2/anything"):
        assert render(NotFound("already exists")).status_code == 404
        assert render(Conflict("not found")).status_code == 409


# -- the factory reads only the environment it is given -------------------------------------


def test_a_developers_exported_variables_do_not_reach_the_tests(monkeypatch, database_url, tmp_path_factory):
    for name, value in {
        "OLLAMA_BASE_URL": "http://127.0.0.1:9", "OPENAI_API_KEY": "sk-from-the-shell",
        "ANTHROPIC_API_KEY": "sk-ant-shell", "DATABASE_URL": "postgres://nobody@127.0.0.1:9/none",
        "SERVICE_NAME": "gateway", "GAIA_DISABLE_LOCAL_PROVIDER": "1", "RATE_LIMIT_DEFAULT": "bogus",
    }.items():
        monkeypatch.setenv(name, value)
    app = make_app(database_url, tmp_path_factory)
    state = gaia(app)
    assert state.providers.ids() == ["local"]
    assert state.settings.services == ("gateway", "auth", "chat", "asset")
    assert state.settings.database_url.endswith(database_url.rsplit("/", 1)[-1])
