"""scripts/deploy.sh, run as a subprocess with a clean environment: the deploy order, one build
id for every app, the refusals (unknown names, a partial deploy over changed shared code), a
failing `fly` (a fake one on the PATH that records its arguments) and the smoke check against
a local stand-in for the gateway (a stdlib HTTP server on 127.0.0.1).

The project's work tree need not be clean: the tests set GAIA_BUILD_ID (which the dirty-tree
check does not apply to) except where the build id's derivation is what they test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "scripts" / "deploy.sh"
ORDER = ("auth", "chat", "asset", "worker", "gateway")
INHERITED = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ")
BUILD = "0.2.0+testbuild"

FAKE_FLY = """#!/bin/sh
echo "$*" >> "$FLY_LOG"
case "$*" in *"$FLY_FAIL_ON"*) [ -n "$FLY_FAIL_ON" ] && exit 1 ;; esac
exit 0
"""


def git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


class HealthServer:
    """Answers GET /<service>-<env>/health with the version set in `versions` (404 otherwise)."""

    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the stdlib's name)
                owner.paths.append(self.path)
                name = self.path.strip("/").removesuffix("/health")
                version = owner.versions.get(name)
                if version is None or not self.path.endswith("/health"):
                    self.send_error(404)
                    return
                body = json.dumps({
                    "status": "healthy", "service": name.split("-")[0], "version": version,
                    "database": {"status": "connected", "migrations": {"status": "current"}},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.template = f"http://127.0.0.1:{self.httpd.server_address[1]}/{{service}}-{{env}}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def health():
    server = HealthServer()
    yield server
    server.stop()


@pytest.fixture
def fly(tmp_path) -> Path:
    """A directory with a fake `fly` that appends its arguments to $FLY_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fly").write_text(FAKE_FLY)
    (bin_dir / "fly").chmod(0o755)
    return bin_dir


def clean_env(tmp_path: Path, fly_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    python_dir = str(Path(sys.executable).parent)
    path = [python_dir, *os.environ.get("PATH", "").split(os.pathsep)]
    if fly_dir is not None:
        path.insert(0, str(fly_dir))
    env.update(PATH=os.pathsep.join(path), NO_PROXY="*", PYTHON=sys.executable,
               FLY_LOG=str(tmp_path / "fly.log"))
    env.update(extra)
    return env


def deploy(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(DEPLOY), *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def describe(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def head_version() -> str:
    return f"0.2.0+{git('rev-parse', '--short=12', 'HEAD')}"


def old_shared_version() -> str:
    """A version whose commit has other gaia_app code than HEAD: the parent of gaia_app's
    latest change (skipped in a clone too shallow to have it)."""
    latest = git("rev-list", "-n", "1", "HEAD", "--", "gaia_app")
    return f"0.2.0+{git('rev-parse', '--short=12', latest + '^')}"


def test_dry_run_all_prints_the_deploys_in_order_then_the_smoke_check(tmp_path):
    result = deploy(clean_env(tmp_path, GAIA_BUILD_ID=BUILD), "--env", "staging",
                    "--services", "all", "--dry-run")
    assert result.returncode == 0, describe(result)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 6, describe(result)
    for service, line in zip(ORDER, lines):
        assert line == (f"+ fly deploy --config fly/fly.{service}.staging.toml --remote-only "
                         f"--build-arg GAIA_BUILD_ID={BUILD}")
        assert (ROOT / f"fly/fly.{service}.staging.toml").is_file()
    assert lines[5] == "+ scripts/test.sh --url https://gaia-gateway-staging.fly.dev health"
    assert not (tmp_path / "fly.log").exists()


def test_dry_run_build_id_is_the_version_and_head_commit(tmp_path):
    result = deploy(clean_env(tmp_path, GAIA_API_KEY="gaia_dev_secret"), "--env", "dev",
                    "--services", "all", "--dry-run", "--force")
    assert result.returncode == 0, describe(result)
    assert result.stdout.count(f"--build-arg GAIA_BUILD_ID={head_version()}\n") == 5
    assert result.stdout.strip().splitlines()[-1] == (
        '+ scripts/test.sh --url https://gaia-gateway-dev.fly.dev --api-key "$GAIA_API_KEY" '
        "health providers models")
    assert "gaia_dev_secret" not in result.stdout + result.stderr


@pytest.mark.parametrize("args, named", [
    (("--env", "dev", "--services", "auth,billing"), "billing"),
    (("--env", "qa", "--services", "all"), "qa"),
])
def test_unknown_service_or_environment_exits_2(tmp_path, args, named):
    result = deploy(clean_env(tmp_path, GAIA_BUILD_ID=BUILD), *args, "--dry-run")
    assert result.returncode == 2, describe(result)
    assert named in result.stderr
    assert "valid:" in result.stderr


def test_a_list_deploys_in_canonical_order_without_skew(tmp_path, health):
    for service in ("auth", "chat", "asset"):
        health.versions[f"{service}-dev"] = head_version()
    env = clean_env(tmp_path, GAIA_BUILD_ID=BUILD, GAIA_DEPLOY_URL_TEMPLATE=health.template)
    result = deploy(env, "--env", "dev", "--services", "gateway,worker", "--dry-run")
    assert result.returncode == 0, describe(result)
    lines = result.stdout.strip().splitlines()
    assert [line.split()[4] for line in lines[:2]] == [
        "fly/fly.worker.dev.toml", "fly/fly.gateway.dev.toml"]
    assert len(lines) == 3
    assert sorted(health.paths) == ["/asset-dev/health", "/auth-dev/health", "/chat-dev/health"]


def test_partial_deploy_over_changed_shared_code_is_refused(tmp_path, health):
    old = old_shared_version()
    health.versions.update({"auth-dev": head_version(), "chat-dev": old, "asset-dev": head_version()})
    env = clean_env(tmp_path, GAIA_BUILD_ID=BUILD, GAIA_DEPLOY_URL_TEMPLATE=health.template)
    refused = deploy(env, "--env", "dev", "--services", "gateway", "--dry-run")
    assert refused.returncode == 1, describe(refused)
    assert "chat" in refused.stderr and "--services all" in refused.stderr
    assert "auth:" not in refused.stderr and "asset:" not in refused.stderr
    assert "fly deploy" not in refused.stdout


def test_forced_partial_deploy_warns_and_goes_on(tmp_path, health, fly):
    health.versions.update({"auth-dev": head_version(), "chat-dev": old_shared_version(),
                            "asset-dev": head_version(), "gateway-dev": head_version()})
    env = clean_env(tmp_path, fly, GAIA_BUILD_ID=BUILD, GAIA_DEPLOY_URL_TEMPLATE=health.template)
    result = deploy(env, "--env", "dev", "--services", "gateway", "--force")
    assert result.returncode == 0, describe(result)
    assert "warning (--force)" in result.stderr and "chat" in result.stderr
    assert (tmp_path / "fly.log").read_text().splitlines() == [
        f"deploy --config fly/fly.gateway.dev.toml --remote-only --build-arg GAIA_BUILD_ID={BUILD}"]


def test_a_service_that_does_not_answer_refuses_a_partial_deploy(tmp_path, health):
    health.versions.update({"auth-dev": head_version(), "chat-dev": head_version()})  # no asset
    env = clean_env(tmp_path, GAIA_BUILD_ID=BUILD, GAIA_DEPLOY_URL_TEMPLATE=health.template)
    result = deploy(env, "--env", "dev", "--services", "gateway", "--dry-run")
    assert result.returncode == 1, describe(result)
    assert "asset:" in result.stderr and "worker (read through asset)" in result.stderr
    assert "--force" in result.stderr


def test_deploy_runs_every_fly_deploy_then_the_smoke_check(tmp_path, health, fly):
    health.versions["gateway-prod"] = BUILD
    env = clean_env(tmp_path, fly, GAIA_BUILD_ID=BUILD, GAIA_DEPLOY_URL_TEMPLATE=health.template)
    result = deploy(env, "--env", "prod", "--services", "all")
    assert result.returncode == 0, describe(result)
    calls = (tmp_path / "fly.log").read_text().splitlines()
    assert [call.split()[2] for call in calls] == [f"fly/fly.{s}.prod.toml" for s in ORDER]
    assert all(call.endswith(f"--build-arg GAIA_BUILD_ID={BUILD}") for call in calls)
    assert health.paths == ["/gateway-prod/health"]
    assert "+ scripts/test.sh --url " + health.template.format(service="gateway", env="prod") in result.stdout


def test_a_failing_fly_deploy_stops_the_deploy(tmp_path, health, fly):
    health.versions["gateway-dev"] = BUILD
    env = clean_env(tmp_path, fly, GAIA_BUILD_ID=BUILD, GAIA_DEPLOY_URL_TEMPLATE=health.template,
                    FLY_FAIL_ON="fly.chat.dev.toml")
    result = deploy(env, "--env", "dev", "--services", "all")
    assert result.returncode != 0, describe(result)
    calls = (tmp_path / "fly.log").read_text().splitlines()
    assert [call.split()[2] for call in calls] == ["fly/fly.auth.dev.toml", "fly/fly.chat.dev.toml"]
    assert health.paths == []
    assert "deploy stopped" in result.stderr


def test_a_failing_smoke_check_fails_the_deploy(tmp_path, health, fly):
    env = clean_env(tmp_path, fly, GAIA_BUILD_ID=BUILD, GAIA_DEPLOY_URL_TEMPLATE=health.template)
    result = deploy(env, "--env", "dev", "--services", "all")  # the gateway answers 404
    assert result.returncode != 0, describe(result)
    assert len((tmp_path / "fly.log").read_text().splitlines()) == 5
    assert "smoke check" in result.stderr


def test_missing_fly_exits_2(tmp_path):
    if shutil.which("fly"):
        pytest.skip("a real fly is on the PATH")
    result = deploy(clean_env(tmp_path, GAIA_BUILD_ID=BUILD), "--env", "dev", "--services", "all")
    assert result.returncode == 2, describe(result)
    assert "fly" in result.stderr and "PATH" in result.stderr


def test_a_dirty_work_tree_is_refused_unless_forced(tmp_path):
    """In a throw-away repository holding the script: a changed tracked file refuses the
    deploy when the build id comes from HEAD."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "gaia_app").mkdir()
    for name in ("scripts/deploy.sh", "scripts/deploy.py", "gaia_app/constants.py"):
        shutil.copy2(ROOT / name, repo / name)
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    env = clean_env(tmp_path, **identity)
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    (repo / "gaia_app" / "constants.py").write_text("__version__ = '9.9.9'\n")
    command = [str(repo / "scripts" / "deploy.sh"), "--env", "dev", "--services", "all", "--dry-run"]
    refused = subprocess.run(command, env=env, cwd=repo, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1, describe(refused)
    assert "uncommitted changes" in refused.stderr and "gaia_app/constants.py" in refused.stderr
    forced = subprocess.run(command + ["--force"], env=env, cwd=repo, capture_output=True,
                            text=True, timeout=30)
    assert forced.returncode == 0, describe(forced)
    assert "warning (--force)" in forced.stderr
    assert "GAIA_BUILD_ID=9.9.9+" in forced.stdout
