#!/usr/bin/env python3
"""Write the Fly.io configs `fly/fly.<service>.<env>.toml` from one template.

    python scripts/gen-fly-configs.py           # (re)write all 15 files
    python scripts/gen-fly-configs.py --check   # exit 1, listing stale/missing/extra files

Everything that differs between the files lives in the tables below (SERVICES, ENVIRONMENTS);
`render` turns one (service, environment) pair into text. Edit here, never the outputs.
Standard library only, Python 3.10+.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLY_DIR = ROOT / "fly"
PORT = 8080
RELEASE_COMMAND = "flask --app wsgi db upgrade"
# The one app per environment whose deploy migrates the schema (see MIGRATOR_NOTE).
MIGRATOR = "auth"
MIGRATOR_NOTE = (
    "The schema is migrated by this app's release command and by no other: auth owns the\n"
    "users and api_keys tables every service validates credentials against, and it is\n"
    "deployed first (auth, chat, asset, worker, then gateway last, so the public entry point\n"
    "forwards to the new build only once the services behind it run it). A release command\n"
    "that fails stops this deploy before any machine runs code the schema does not fit."
)
WORKER_COMMAND = "celery -A celery_worker worker --concurrency 2 --loglevel INFO"

# service -> what it runs. `runs` is SERVICE_NAME; `http` says whether it serves HTTP.
SERVICES: dict[str, dict] = {
    "gateway": {"runs": "gateway", "http": True, "public_entry": True},
    "auth": {"runs": "auth", "http": True, "public_entry": False},
    "chat": {"runs": "chat", "http": True, "public_entry": False},
    "asset": {"runs": "asset", "http": True, "public_entry": False},
    "worker": {"runs": "asset", "http": False, "public_entry": False},
}
BACKENDS = ("auth", "chat", "asset")

# environment -> region, machine sizes and how many machines stay up.
ENVIRONMENTS: dict[str, dict] = {
    "dev": {
        "region": "lax", "web_vm": ("shared-cpu-1x", "512mb"), "worker_vm": ("shared-cpu-1x", "1024mb"),
        "gateway_auto_stop": "stop", "min_machines": 0, "extra_env": {},
    },
    "staging": {
        "region": "lax", "web_vm": ("shared-cpu-2x", "1024mb"), "worker_vm": ("shared-cpu-2x", "2048mb"),
        "gateway_auto_stop": "off", "min_machines": 1, "extra_env": {},
    },
    "prod": {
        "region": "lax", "web_vm": ("performance-1x", "2048mb"), "worker_vm": ("performance-2x", "4096mb"),
        "gateway_auto_stop": "off", "min_machines": 2,
        "extra_env": {"GAIA_DISABLE_LOCAL_PROVIDER": "1"},
    },
}

SECRETS_WEB = (
    "DATABASE_URL   postgres://postgres:<password>@gaia-db-{env}.internal:5432/postgres\n"
    "               (the shared `postgres` database of gaia-db-{env}; never `fly postgres attach`,\n"
    "               which makes a separate database per app)",
    "REDIS_URL      redis://... (Celery broker, shared rate limits and caches)",
    "GAIA_SECRET_KEY  the same value on every app of {env}, at least 32 bytes",
)
SECRETS_ASSETS = (
    "ASSET_STORAGE_URL  s3://bucket/prefix, plus AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY\n"
    "               (and S3_ENDPOINT_URL outside AWS): the asset service and the workers run on\n"
    "               different machines, so files cannot stay in a machine-local folder",
    "OPENAI_IMAGES_API_KEY / STABILITY_API_KEY / MESHY_API_KEY  as needed",
)
SECRETS_CHAT = ("OPENAI_API_KEY / ANTHROPIC_API_KEY  (and the other provider keys) as needed",)


def toml_value(value) -> str:
    """A TOML literal for the few value types the configs use."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def table(name: str, values: dict, indent: str = "") -> list[str]:
    """`[name]` (or `[[name]]` when the name is given with brackets) and its keys."""
    header = name if name.startswith("[") else f"[{name}]"
    lines = [f"{indent}{header}"]
    lines += [f"{indent}  {key} = {toml_value(value)}" for key, value in values.items()]
    return lines + [""]


def env_vars(service: str, env: str) -> dict[str, str]:
    spec, setting = SERVICES[service], ENVIRONMENTS[env]
    values = {"SERVICE_NAME": spec["runs"], "ENVIRONMENT": env}
    if spec["http"]:
        # Fly's private network (6PN) is IPv6: `[::]` takes IPv6 and IPv4, so both the Fly
        # proxy and the gateway's `.internal` calls reach gunicorn.
        values |= {"HOST": "[::]", "PORT": str(PORT), "TRUSTED_PROXY_COUNT": "1"}
    if service == "gateway":
        values |= {
            f"{name.upper()}_SERVICE_URL": f"http://gaia-{name}-{env}.internal:{PORT}"
            for name in BACKENDS
        }
    return values | setting["extra_env"]


def header(service: str, env: str) -> list[str]:
    """The opening comment: provenance, deploy command, and the secrets this app needs."""
    secrets = list(SECRETS_WEB)
    if SERVICES[service]["runs"] == "asset":
        secrets += SECRETS_ASSETS
    if service in ("chat", "gateway"):
        secrets += SECRETS_CHAT
    lines = [
        "# generated by scripts/gen-fly-configs.py; edit the template there",
        f"# gaia-{service}-{env}: deploy from the repository root with",
        f"#   fly deploy --config fly/fly.{service}.{env}.toml --remote-only",
        "# Secrets (never in this file), once per app:",
        f"#   fly secrets set -a gaia-{service}-{env} NAME=value ...",
    ]
    for secret in secrets:
        for index, line in enumerate(secret.format(env=env).splitlines()):
            lines.append(("#   - " if index == 0 else "#     ") + line.strip())
    return lines + [""]


def http_sections(service: str, env: str) -> list[str]:
    setting = ENVIRONMENTS[env]
    # The gateway is reached through the Fly proxy, which starts stopped machines. The
    # services behind it are called on `.internal` addresses, which bypass the proxy: a
    # stopped auth/chat/asset machine would never be woken, so those never stop.
    auto_stop = setting["gateway_auto_stop"] if SERVICES[service]["public_entry"] else "off"
    floor = 0 if auto_stop != "off" else 1
    lines = table("http_service", {
        "internal_port": PORT, "force_https": True, "auto_stop_machines": auto_stop,
        "auto_start_machines": True, "min_machines_running": max(setting["min_machines"], floor),
        "processes": ["app"],
    })
    lines.append("  # Readiness: the proxy routes only to machines whose /health answers 200 (it")
    lines.append("  # returns 503 when the database is unreachable). The gateway's report also asks")
    lines.append("  # the services behind it (1 s connect + 2 s read each, in parallel): timeout 5s.")
    lines += table("[[http_service.checks]]", {
        "grace_period": "20s", "interval": "15s", "method": "GET", "path": "/health", "timeout": "5s",
    }, indent="  ")
    lines.append("# Liveness, apart from readiness: `fly checks list` then tells a dead process from")
    lines.append("# a machine that cannot reach its database. /health/live touches nothing.")
    lines += table("checks.live", {
        "type": "http", "port": PORT, "method": "GET", "path": "/health/live",
        "grace_period": "10s", "interval": "30s", "timeout": "2s",
    })
    return lines


def worker_sections() -> list[str]:
    lines = [
        "# The worker serves no HTTP: no [http_service], and no Fly check. Its health is",
        "# Celery's: `celery -A celery_worker inspect ping` (on the machine, `fly ssh console`),",
        "# Flower, or `flask --app wsgi jobs list --status failed`.",
    ]
    return lines + table("processes", {"worker": WORKER_COMMAND})


def render(service: str, env: str) -> str:
    """The full text of fly/fly.<service>.<env>.toml."""
    spec, setting = SERVICES[service], ENVIRONMENTS[env]
    lines = header(service, env)
    lines += [f'app = "gaia-{service}-{env}"', f'primary_region = "{setting["region"]}"']
    # SIGTERM is graceful for gunicorn (finish requests within graceful_timeout = 20 s) and a
    # warm shutdown for Celery (finish running jobs). Gunicorn takes Fly's default, SIGINT,
    # as a quick shutdown that drops open requests.
    lines += ['kill_signal = "SIGTERM"', f"kill_timeout = {30 if spec['http'] else 120}", ""]
    lines.append("# The path is relative to this file; the build context is the directory `fly deploy` runs in.")
    lines += table("build", {"dockerfile": "../Dockerfile"})
    if service == MIGRATOR:
        lines += ["# " + line for line in MIGRATOR_NOTE.splitlines()]
        lines += table("deploy", {"release_command": RELEASE_COMMAND})
    lines += table("env", env_vars(service, env))
    if spec["http"]:
        lines.append("# Runs the image's CMD: gunicorn -c gunicorn.conf.py wsgi:app")
        lines += http_sections(service, env)
    else:
        lines += worker_sections()
    size, memory = setting["web_vm" if spec["http"] else "worker_vm"]
    lines += table("[[vm]]", {"size": size, "memory": memory})
    return "\n".join(lines).rstrip("\n") + "\n"


def expected_files() -> dict[Path, str]:
    return {
        FLY_DIR / f"fly.{service}.{env}.toml": render(service, env)
        for env in ENVIRONMENTS
        for service in SERVICES
    }


def check(expected: dict[Path, str]) -> list[str]:
    """What differs on disk: `stale`, `missing` and `extra` lines (empty when up to date)."""
    problems = []
    for path, text in expected.items():
        if not path.exists():
            problems.append(f"missing: {path.relative_to(ROOT)}")
        elif path.read_text() != text:
            problems.append(f"stale: {path.relative_to(ROOT)}")
    for path in sorted(FLY_DIR.glob("fly.*.toml")):
        if path not in expected:
            problems.append(f"extra: {path.relative_to(ROOT)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if out of date")
    args = parser.parse_args(argv)
    expected = expected_files()
    if args.check:
        problems = check(expected)
        for problem in problems:
            print(problem)
        if problems:
            print("run: python scripts/gen-fly-configs.py", file=sys.stderr)
        return 1 if problems else 0
    FLY_DIR.mkdir(exist_ok=True)
    for path, text in expected.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    for problem in check(expected):
        print(f"{problem} (not generated here: remove it or add it to the template)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
