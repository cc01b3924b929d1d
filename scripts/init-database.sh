#!/usr/bin/env bash
# Initialise an environment's database: run the migrations, then make the admin user and
# print its API key (once).
#
#   scripts/init-database.sh --env dev --user admin@gaia.dev
#
# It works on the database DATABASE_URL names. For a Fly database, open a tunnel first:
#   fly proxy 15432:5432 -a gaia-db-dev &
#   DATABASE_URL=postgres://postgres:PASSWORD@127.0.0.1:15432/postgres scripts/init-database.sh --env dev --user admin@gaia.dev
# Use the database the services use (`postgres`), never one made by `fly postgres attach`.
set -euo pipefail
usage() { echo "usage: $0 --env local|dev|staging|prod --user EMAIL [--name NAME]" >&2; exit 2; }

env_name="" email="" name=""
while [ $# -gt 0 ]; do
  case "$1" in
    --env|--user|--name) [ $# -ge 2 ] || { echo "$1 needs a value" >&2; usage; } ;;
  esac
  case "$1" in
    --env) env_name="$2"; shift 2 ;;
    --user) email="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$env_name" ] && [ -n "$email" ] || usage
case "$env_name" in local|dev|staging|prod) ;; *) echo "--env must be local, dev, staging or prod" >&2; exit 2 ;; esac
if [ "$env_name" != local ] && [ -z "${DATABASE_URL:-}" ]; then
  echo "DATABASE_URL must name the $env_name database (gaia-db-$env_name); see the comment at the top of $0" >&2
  exit 2
fi

source "$(dirname "$0")/_venv.sh"
ensure_venv "$ROOT/requirements.txt"
cd "$ROOT"
export ENVIRONMENT="$env_name"
if [ "$env_name" != local ] && [ -z "${GAIA_SECRET_KEY:-}" ]; then
  # The CLI signs nothing; a throw-away value satisfies the start-up check.
  GAIA_SECRET_KEY="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(48))')"
  export GAIA_SECRET_KEY
fi

echo "== migrating the $env_name database" >&2
"$VENV/bin/flask" --app wsgi db upgrade
echo "== admin user $email" >&2
args=(--email "$email")
[ -n "$name" ] && args+=(--name "$name")
"$VENV/bin/flask" --app wsgi create-admin "${args[@]}"
