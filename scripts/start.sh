#!/usr/bin/env bash
# Install and start the whole platform on this machine.
# With nothing set: SQLite in ./instance, the built-in `local` providers, no Redis needed.
# Set DATABASE_URL / REDIS_URL (and the rest, see README) to run on PostgreSQL and Redis.
source "$(dirname "$0")/_venv.sh"
ensure_venv "$ROOT/requirements.txt"
cd "$ROOT"
export PATH="$VENV/bin:$PATH"

flask --app wsgi db upgrade
# First run: make the admin and show its key (only this once).
flask --app wsgi create-admin --email "${GAIA_ADMIN_EMAIL:-admin@gaia.local}" --if-missing

export HOST="${HOST:-127.0.0.1}" PORT="${PORT:-8000}"
echo "gaia: serving on http://$HOST:$PORT  (health: /health, API docs: /docs)" >&2
exec gunicorn -c gunicorn.conf.py wsgi:app
