"""A web worker loads only what serving needs: migration tooling (Flask-Migrate, alembic,
mako), Celery and PyJWT's cryptography stay out until something asks for them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, os, sys
from gevent import monkey; monkey.patch_all()
import wsgi
client = wsgi.app.test_client()
first = client.get("/health")
loaded = {name: name in sys.modules for name in
          ("flask_migrate", "alembic", "mako", "celery", "jwt", "cryptography")}
print(json.dumps({"health": first.status_code, "loaded": loaded}))
"""


def test_serving_loads_no_migration_tooling_celery_or_cryptography(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GAIA_INSTANCE_PATH": str(tmp_path), "LOG_LEVEL": "WARNING"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["health"] == 200  # degraded (not migrated) is still an answer without alembic
    assert report["loaded"] == dict.fromkeys(report["loaded"], False)
