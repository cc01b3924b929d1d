"""scripts/test.sh against a live server: passes on a good deployment, fails loudly otherwise."""

import subprocess
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def live_url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def run(*args):
    return subprocess.run(
        ["bash", str(ROOT / "scripts/test.sh"), *args], capture_output=True, text=True, timeout=60
    )


def test_passes_the_seed_checks(live_url, make):
    key = make.key()
    result = run("--url", live_url, "--api-key", key, "health", "providers", "models", "auth")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed, 0 failed" in result.stdout
    assert key not in result.stdout


def test_fails_with_the_reason_on_a_bad_key(live_url):
    forged = "gaia_local_" + "B" * 49
    result = run("--url", live_url, "--api-key", forged, "providers")
    assert result.returncode == 1
    assert "FAIL providers" in result.stdout and "401" in result.stdout


def test_fails_when_nothing_listens():
    result = run("--url", "http://127.0.0.1:1", "health")
    assert result.returncode == 1
    assert "cannot connect" in result.stdout
