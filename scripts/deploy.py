"""Deploy Gaia's Fly apps of one environment, in order, with one build id, then smoke-test them.

    scripts/deploy.sh --env dev --services all [--dry-run] [--force]
    scripts/deploy.sh --env dev --services chat,gateway

Services go out in the order auth, chat, asset, worker, gateway whatever order LIST names
them in: auth's release command runs `flask --app wsgi db upgrade`, so the schema is migrated
before any service runs the new code, and the gateway (the public entry point) goes last.
Every `fly deploy` gets the same `--build-arg GAIA_BUILD_ID=<id>` (GAIA_BUILD_ID, or
`<version>+<12-char commit of HEAD>`), so all apps of one deploy report the same `version`.

Refusals (exit 1, `--force` turns each into a warning):
- a work tree with uncommitted changes to tracked files, when the build id comes from HEAD
  (the build would not be the commit its id names);
- a partial deploy that would leave a service on older shared code (`gaia_app`, `migrations`,
  `requirements.txt`): the seed's "403 Authentication Errors After Deployment".

Each service's URL comes from GAIA_DEPLOY_URL_TEMPLATE (default
https://gaia-{service}-{env}.fly.dev). After the deploys it runs
`scripts/test.sh --url <gateway url> health providers models` (health only without
GAIA_API_KEY). Exit 2 for a usage error or a missing `fly`. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("auth", "chat", "asset", "worker", "gateway")
ENVIRONMENTS = ("dev", "staging", "prod")
SHARED_PATHS = ("gaia_app", "migrations", "requirements.txt")
DEFAULT_URL_TEMPLATE = "https://gaia-{service}-{env}.fly.dev"
HEALTH_TIMEOUT = 10.0
# The worker has no HTTP server, so its version cannot be asked for. It runs the asset
# service's code from the same image, so when it is left out of a deploy the version the asset
# service reports stands in for it (an old asset service means an old worker is likely too).
VERSION_SOURCE = {"worker": "asset"}


class UsageError(Exception):
    """A bad argument or a missing tool: exit 2."""


class Refused(Exception):
    """A deploy that would leave the environment inconsistent: exit 1 unless --force."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/deploy.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--env", required=True, help="|".join(ENVIRONMENTS))
    parser.add_argument("--services", required=True, help="all, or a comma list of " + ",".join(SERVICES))
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--force", action="store_true", help="warn instead of refusing")
    args = parser.parse_args(argv)
    if args.env not in ENVIRONMENTS:
        raise UsageError(f"unknown environment {args.env!r}; valid: {', '.join(ENVIRONMENTS)}")
    args.services = parse_services(args.services)
    return args


def parse_services(text: str) -> list[str]:
    """`all` or a comma list, returned in the canonical deploy order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(SERVICES)
    unknown = [name for name in names if name not in SERVICES]
    if unknown or not names:
        raise UsageError(
            f"unknown service(s) {', '.join(unknown) or '(none given)'}; "
            f"valid: all, or a comma list of {', '.join(SERVICES)}"
        )
    return [service for service in SERVICES if service in names]


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def package_version() -> str:
    """`__version__` from gaia_app/constants.py, read as text (no Flask import)."""
    text = (ROOT / "gaia_app" / "constants.py").read_text()
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
    if not match:
        raise UsageError("no __version__ in gaia_app/constants.py")
    return match.group(1)


def build_id(env: dict[str, str]) -> tuple[str, bool]:
    """(the build id, whether it was derived from HEAD)."""
    explicit = env.get("GAIA_BUILD_ID", "").strip()
    if explicit:
        return explicit, False
    head = git("rev-parse", "--short=12", "HEAD")
    if head.returncode != 0:
        raise UsageError(f"cannot read the commit of HEAD (set GAIA_BUILD_ID): {head.stderr.strip()}")
    return f"{package_version()}+{head.stdout.strip()}", True


def check_clean() -> None:
    status = git("status", "--porcelain", "--untracked-files=no")
    if status.returncode != 0:
        raise Refused(f"cannot read the work tree's state: {status.stderr.strip()}")
    if status.stdout.strip():
        changed = ", ".join(line[3:] for line in status.stdout.splitlines()[:10])
        raise Refused(
            f"the work tree has uncommitted changes ({changed}): the build would not match "
            "its commit; commit them, or pass --force"
        )


def service_url(template: str, service: str, env_name: str) -> str:
    return template.format(service=service, env=env_name).rstrip("/")


def reported_version(url: str) -> str:
    """The `version` a service's /health reports; raises LookupError with the reason."""
    request = urllib.request.Request(url + "/health", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        raw = error.read()  # a 503 /health still names its version
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise LookupError(f"no answer from {url}/health ({error})") from None
    try:
        version = json.loads(raw).get("version")
    except (ValueError, AttributeError):
        raise LookupError(f"{url}/health did not answer JSON") from None
    if not isinstance(version, str) or not version:
        raise LookupError(f"{url}/health reports no version")
    return version


def shared_code_change(version: str) -> str | None:
    """Why a service reporting `version` runs other shared code than HEAD (None: it does not)."""
    commit = version.rpartition("+")[2]  # `<version>+<commit>`, or a bare commit set by hand
    if not re.fullmatch(r"[0-9a-fA-F]{7,40}", commit):
        return f"version {version!r} names no commit"
    if git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}").returncode != 0:
        return f"commit {commit} (version {version}) is unknown here"
    diff = git("diff", "--quiet", commit, "HEAD", "--", *SHARED_PATHS)
    if diff.returncode == 0:
        return None
    if diff.returncode == 1:
        return f"shared code changed since {commit} (version {version})"
    return f"cannot compare {commit} with HEAD: {diff.stderr.strip()}"


def check_skew(deploying: list[str], env_name: str, template: str) -> None:
    """Refuse when a service left out of a partial deploy would run older shared code."""
    problems = []
    versions: dict[str, str | LookupError] = {}
    for service in (s for s in SERVICES if s not in deploying):
        source = VERSION_SOURCE.get(service, service)
        if source not in versions:
            try:
                versions[source] = reported_version(service_url(template, source, env_name))
            except LookupError as error:
                versions[source] = error
        found = versions[source]
        reason = str(found) if isinstance(found, LookupError) else shared_code_change(found)
        if reason:
            via = f" (read through {source})" if source != service else ""
            problems.append(f"{service}{via}: {reason}")
    if problems:
        raise Refused(
            "this partial deploy would leave services on old shared code (gaia_app, migrations, "
            "requirements.txt), which then answer 403 to each other's credentials:\n  "
            + "\n  ".join(problems)
            + "\ndeploy every service (--services all), or pass --force"
        )


def commands(args: argparse.Namespace, build: str, template: str, api_key: str) -> list[list[str]]:
    """The `fly deploy` commands in order, then the smoke check."""
    planned = [
        ["fly", "deploy", "--config", f"fly/fly.{service}.{args.env}.toml", "--remote-only",
         "--build-arg", f"GAIA_BUILD_ID={build}"]
        for service in args.services
    ]
    smoke = ["scripts/test.sh", "--url", service_url(template, "gateway", args.env)]
    if api_key:
        smoke += ["--api-key", api_key, "health", "providers", "models"]
    else:
        smoke += ["health"]
    return planned + [smoke]


def shown(command: list[str], api_key: str) -> str:
    """The command as printed: the API key stays out of the output."""
    return "+ " + " ".join(
        '"$GAIA_API_KEY"' if api_key and part == api_key else shlex.quote(part) for part in command
    )


def guarded(check, force: bool) -> None:
    try:
        check()
    except Refused as refusal:
        if not force:
            raise
        print(f"warning (--force): {refusal}", file=sys.stderr)


def run_all(planned: list[list[str]], api_key: str) -> int:
    env = dict(os.environ)
    env.setdefault("PYTHON", sys.executable)
    for command in planned:
        print(shown(command, api_key), flush=True)
        result = subprocess.run(command, cwd=ROOT, env=env)
        if result.returncode != 0:
            what = "the smoke check" if command[0] != "fly" else f"`{' '.join(command[:4])}`"
            print(f"deploy stopped: {what} exited {result.returncode}", file=sys.stderr)
            return result.returncode or 1
    return 0


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
        env = dict(os.environ)
        build, from_head = build_id(env)
        template = env.get("GAIA_DEPLOY_URL_TEMPLATE", "").strip() or DEFAULT_URL_TEMPLATE
        api_key = env.get("GAIA_API_KEY", "").strip()
        if not args.dry_run and shutil.which("fly") is None:
            raise UsageError("`fly` is not on the PATH: install flyctl (https://fly.io/docs/flyctl/install/)")
        if from_head:
            guarded(check_clean, args.force)
        if len(args.services) < len(SERVICES) and not (args.dry_run and args.force):
            guarded(lambda: check_skew(args.services, args.env, template), args.force)
    except UsageError as error:
        print(f"deploy.sh: {error}", file=sys.stderr)
        return 2
    except Refused as refusal:
        print(f"deploy.sh: refused: {refusal}", file=sys.stderr)
        return 1
    planned = commands(args, build, template, api_key)
    if args.dry_run:
        for command in planned:
            print(shown(command, api_key))
        return 0
    print(f"deploying {', '.join(args.services)} to {args.env} as build {build}", flush=True)
    return run_all(planned, api_key)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
