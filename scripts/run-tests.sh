#!/usr/bin/env bash
# Install the test tools and run the whole suite (extra arguments go to pytest).
# PostgreSQL and Redis tests run when they are reachable on 127.0.0.1 and are skipped
# otherwise (GAIA_TEST_REQUIRE_POSTGRES=1 / GAIA_TEST_REQUIRE_REDIS=1 make that a failure).
source "$(dirname "$0")/_venv.sh"
ensure_venv "$ROOT/requirements-dev.txt"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
