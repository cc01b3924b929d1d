"""Schemathesis against the app's own OpenAPI document, on SQLite and PostgreSQL.

Every operation is called with requests generated from the document, valid ones and ones that
break it, and each answer must be no 5xx, a documented status, a documented content type and
a body that matches its documented schema. The calls carry an admin key whose owner and key
the generated requests are never allowed to name (a fuzzer that revokes its own key only
tests 401s from then on).
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gaia_app import accounts, create_app
from gaia_app.extensions import db
from tests.test_e2e_gunicorn import NO_PROXY, ROOT, VENV_BIN, deployment  # noqa: F401 (fixture)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXAMPLES_PER_OPERATION = 20
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


class FuzzCaller:
    """The admin whose key every generated request carries, and the ids it must not touch."""

    def __init__(self, app) -> None:
        with app.app_context():
            user = accounts.create_user("fuzz-admin@example.com", is_admin=True)
            key, self.key = accounts.create_api_key(user, name="fuzz", environment="local")
            db.session.commit()
            self.protected = {str(user.id), str(key.id), user.id.hex, key.id.hex}

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def shield(self, case) -> None:
        """A generated path id that names the caller's own key or user becomes another id."""
        for name, value in (case.path_parameters or {}).items():
            if str(value) in self.protected:
                case.path_parameters[name] = str(uuid.uuid4())


def _loaded(app):
    schema = schemathesis.openapi.from_wsgi("/api/v0.2/openapi.json", app)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    return schema


def _operation_ids() -> list[str]:
    """Read from the document of an app that needs no database to describe itself."""
    app = create_app({"DATABASE_URL": "sqlite://", "TESTING": True}, environ={})
    spec = app.test_client().get("/api/v0.2/openapi.json").get_json()
    return [operation["operationId"] for methods in spec["paths"].values()
            for operation in methods.values() if isinstance(operation, dict) and "operationId" in operation]


@pytest.fixture
def caller(app) -> FuzzCaller:
    return FuzzCaller(app)


@pytest.mark.parametrize("operation_id", _operation_ids())
def test_every_operation_answers_as_documented(app, caller, operation_id):
    operation = _loaded(app).find_operation_by_id(operation_id)
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @FUZZ_SETTINGS
    @given(case=cases)
    def answers_as_documented(case):
        caller.shield(case)
        case.call_and_validate(headers=caller.headers, checks=CHECKS)

    answers_as_documented()


# -- stateful: the schemathesis engine against gunicorn ----------------------------------------


def test_linked_calls_answer_as_documented_over_http(deployment):
    """Schemathesis' own engine, stateful phase: what one call returns (a key's or a persona's
    id) feeds the next along the document's links, against gunicorn over real HTTP."""
    server = deployment.server
    me = requests.get(f"{server.url}/api/v0.2/auth/me", headers={"X-API-Key": deployment.admin_key},
                      proxies=NO_PROXY, timeout=10).json()
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env.update(SCHEMATHESIS_HOOKS="tests.fuzz_hooks", PYTHONPATH=str(ROOT),
               GAIA_FUZZ_PROTECTED=",".join([me["id"], me["key_id"]]), NO_PROXY="*")
    run = subprocess.run(
        [str(VENV_BIN / "st"), "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
         "run", f"{server.url}/api/v0.2/openapi.json", "--phases", "examples,coverage,fuzzing,stateful", "--checks", ",".join(check.__name__ for check in CHECKS),
         "--header", f"X-API-Key: {deployment.admin_key}", "--max-examples", "25",
         "--generation-deterministic", "--workers", "1", "--no-color"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "Stateful" in run.stdout
    still = requests.get(f"{server.url}/api/v0.2/auth/me", headers={"X-API-Key": deployment.admin_key},
                         proxies=NO_PROXY, timeout=10)
    assert still.status_code == 200 and still.json()["is_admin"], still.text
