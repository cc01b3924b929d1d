"""Every kind of Gaia process builds its app, and then every module of Gaia imports in it.

A shared module can import something that only another service's modules happen to load
first (or a name that is gone): the monolith still starts, and the one service that imports
it first fails at its first request. So each process kind runs in a fresh interpreter, the
way it is started (`wsgi` for each SERVICE_NAME, `celery_worker` for the asset worker), and
then imports every module under gaia_app/, blueprints/ and tasks/ in that state. The
processes run side by side; each test reads its own result.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REDIS_TEST_URL
from tests.test_e2e_gunicorn import ROOT, base_env

NOWHERE = "http://127.0.0.1:9"  # a gateway alone needs the others' URLs; none is called
URLS = {f"{name}_SERVICE_URL": NOWHERE for name in ("AUTH", "CHAT", "ASSET")}
PROCESSES = {
    "gateway": ("wsgi", {"SERVICE_NAME": "gateway", **URLS}),
    "auth": ("wsgi", {"SERVICE_NAME": "auth"}),
    "chat": ("wsgi", {"SERVICE_NAME": "chat"}),
    "asset": ("wsgi", {"SERVICE_NAME": "asset"}),
    "all": ("wsgi", {"SERVICE_NAME": "all"}),
    "worker": ("celery_worker", {"SERVICE_NAME": "asset", "REDIS_URL": REDIS_TEST_URL}),
}

# Run in the child: build the app through its entry point, then import every module.
IMPORT_EVERYTHING = """
import importlib, pkgutil, sys, traceback

importlib.import_module(sys.argv[1])
import blueprints, gaia_app, tasks

failures = {}

def failed(name):
    kind, error = sys.exc_info()[:2]
    failures.setdefault(name, traceback.format_exception_only(kind, error)[-1].strip())

count = 0
for package in (gaia_app, blueprints, tasks):
    for found in pkgutil.walk_packages(package.__path__, package.__name__ + ".", onerror=failed):
        count += 1
        try:
            importlib.import_module(found.name)
        except BaseException:
            failed(found.name)
for name, error in sorted(failures.items()):
    print(f"{name}: {error}")
print(f"imported {count} modules")
sys.exit(1 if failures else 0)
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    running = {}
    for name, (entry, settings) in PROCESSES.items():
        directory = tmp_path_factory.mktemp(f"imports-{name}")
        env = base_env(f"sqlite:///{directory / 'gaia.db'}", directory / "instance", **settings)
        running[name] = subprocess.Popen(
            [sys.executable, "-c", IMPORT_EVERYTHING, entry], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    finished = {}
    for name, process in running.items():
        try:
            stdout, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        finished[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return finished


@pytest.mark.parametrize("process", list(PROCESSES))
def test_every_module_imports_in_each_kind_of_process(results, process):
    result = results[process]
    report = result.stdout.strip() or result.stderr.strip()[-3000:]
    assert result.returncode == 0, f"{process}:\n{report}"
    count = int(result.stdout.strip().rsplit(" ", 2)[-2])
    assert count >= 100, result.stdout  # the walk found the tree, not an empty folder
