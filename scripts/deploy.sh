#!/usr/bin/env bash
# Deploy an environment's Fly apps in order (auth, chat, asset, worker, gateway) with one build
# id, then smoke-test the gateway:
#   scripts/deploy.sh --env dev|staging|prod --services all|LIST [--dry-run] [--force]
# Refuses a partial deploy that would leave services on old shared code. Needs python3, git, fly.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/deploy.py" "$@"
