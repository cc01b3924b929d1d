#!/usr/bin/env bash
# Run Gaia in split mode on this machine: the gateway, auth, chat and asset services as separate
# gunicorn processes and a Celery worker, started by honcho from the Procfile.
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/gaia scripts/split.sh     # every process
#   scripts/split.sh chat                      # only the named Procfile processes
# Needs PostgreSQL (DATABASE_URL) and Redis (REDIS_URL, default redis://127.0.0.1:6379/0).
# Ports: GAIA_SPLIT_PORT (default 8000) for the gateway, then auth, chat and asset after it.
source "$(dirname "$0")/_venv.sh"
ensure_venv "$ROOT/requirements-dev.txt"
cd "$ROOT"
export PATH="$VENV/bin:$PATH"

# The services share one database: SQLite files cannot be shared safely by five processes.
case "${DATABASE_URL:-}" in
  postgres://* | postgresql://* | postgresql+psycopg://*) ;;
  *)
    echo "gaia: split mode needs DATABASE_URL to name a PostgreSQL database, which every" \
      "service shares (e.g. postgres://postgres@127.0.0.1:5432/gaia); SQLite files cannot be" \
      "shared safely across processes: use scripts/start.sh for one process on SQLite" >&2
    exit 2
    ;;
esac

# Asset jobs go to the Celery worker through Redis, and revocations reach every service by it.
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
python - <<'EOF' || exit 2
import os, sys, redis
try:
    redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2).ping()
except (redis.RedisError, ValueError) as error:
    sys.exit(f"gaia: split mode needs Redis at REDIS_URL (default redis://127.0.0.1:6379/0): {error}")
EOF

export GAIA_SPLIT_PORT="${GAIA_SPLIT_PORT:-8000}"
if ! [[ "$GAIA_SPLIT_PORT" =~ ^[1-9][0-9]{0,4}$ ]] || ((GAIA_SPLIT_PORT < 1 || GAIA_SPLIT_PORT > 65532)); then
  echo "gaia: GAIA_SPLIT_PORT=$GAIA_SPLIT_PORT must be a port from 1 to 65532 (it and the next three are used)" >&2
  exit 2
fi
# Logs reach honcho's output as they are written.
export PYTHONUNBUFFERED=1

# One app build before anything starts: it migrates the schema and, without GAIA_SECRET_KEY,
# creates the instance folder and its secret key file, which every process then reads (five
# processes starting at once would race to create it, and sign tokens with different keys).
flask --app wsgi db upgrade

port="$GAIA_SPLIT_PORT"
echo "gaia: split mode: gateway http://127.0.0.1:$port (health: /health), auth :$((port + 1))," \
  "chat :$((port + 2)), asset :$((port + 3)), Celery worker; Ctrl-C stops them all" >&2
# Every process gets this environment only: honcho would also read a .env file, which the
# checks and the migration above did not see.
exec honcho -f Procfile -e /dev/null start "$@"
