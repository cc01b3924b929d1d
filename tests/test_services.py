"""SERVICE_NAME decides which blueprints one process mounts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gaia_app import create_app
from gaia_app.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# Where a gateway alone finds the other services (never called here).
SERVICE_URLS = {f"{name}_SERVICE_URL": "http://127.0.0.1:9" for name in ("AUTH", "CHAT", "ASSET")}


def routes(app):
    return {rule.rule for rule in app.url_map.iter_rules()}


def endpoint_of(app, path):
    return {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}.get(path)


@pytest.fixture
def instance(tmp_path):
    return {"GAIA_INSTANCE_PATH": str(tmp_path)}


def test_monolith_mounts_everything(instance):
    app = create_app(instance, environ={})
    assert {"/", "/health", "/api/v0.2/models", "/api/v0.2/providers"} <= routes(app)
    assert not [rule for rule in app.url_map.iter_rules() if "forwarding" in rule.endpoint]


def test_a_single_service_mounts_only_itself(instance):
    chat = create_app({**instance, "SERVICE_NAME": "chat"}, environ={})
    assert "/api/v0.2/models" in routes(chat) and "/health" in routes(chat)
    assert "/" not in routes(chat)
    assert chat.test_client().get("/health/live").status_code == 200

    assert endpoint_of(chat, "/api/v0.2/models") == "chat.list_models"

    gateway = create_app({**instance, "SERVICE_NAME": "gateway", **SERVICE_URLS}, environ={})
    # The gateway only forwards the chat paths; it does not serve them itself.
    assert endpoint_of(gateway, "/api/v0.2/models").startswith("gateway_forwarding.")
    body = gateway.test_client().get("/").get_json()
    assert body["services"] == ["gateway"]


def test_unknown_service_name_stops_the_factory(instance):
    with pytest.raises(ConfigError, match="valid names are"):
        create_app({**instance, "SERVICE_NAME": "billing"}, environ={})


def test_wsgi_reports_a_configuration_error_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENVIRONMENT")}
    env.update(SERVICE_NAME="billing", GAIA_INSTANCE_PATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 4
    assert "configuration error" in result.stderr and "gateway" in result.stderr
    assert "Traceback" not in result.stderr
