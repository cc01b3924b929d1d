#!/usr/bin/env bash
# Smoke-test a running deployment:  scripts/test.sh --url URL [--api-key KEY] health|providers|models|auth|chat|assets|all
# Exit 0 only when every named check passes. Needs only python3.
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/smoke_test.py" "$@"
