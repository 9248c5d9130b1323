#!/usr/bin/env bash
# The team's Prefect server (API, UI and the scheduler that creates scheduled runs), on PostgreSQL.
#
#   LMFORGE_ENV_FILE=/etc/lmforge/team.env deployments/team/prefect-server.sh
#
# Reads from the env file (see team.env.example): PREFECT_API_DATABASE_CONNECTION_URL,
# PREFECT_SERVER_API_HOST (default 127.0.0.1), PREFECT_SERVER_API_PORT (default 4200),
# PREFECT_UI_API_URL, PREFECT_HOME. Extra arguments go to `prefect server start`.
# Runs in the foreground until SIGTERM/SIGINT (systemd: lmforge-prefect.service).

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require PREFECT_API_DATABASE_CONNECTION_URL
url=$PREFECT_API_DATABASE_CONNECTION_URL
case $url in
    postgresql+asyncpg://*) ;;
    postgresql://* | postgres://*) url="postgresql+asyncpg://${url#*://}" ;;
    sqlite*) echo "warning: Prefect on SQLite: fine for one user, not for a team (use PostgreSQL)" >&2 ;;
    *) die "PREFECT_API_DATABASE_CONNECTION_URL is not a PostgreSQL URL: $(mask "$url")" ;;
esac
export PREFECT_API_DATABASE_CONNECTION_URL=$url
export PREFECT_SERVER_API_HOST=${PREFECT_SERVER_API_HOST:-127.0.0.1}
export PREFECT_SERVER_API_PORT=${PREFECT_SERVER_API_PORT:-4200}
export PREFECT_UI_API_URL=${PREFECT_UI_API_URL:-http://$PREFECT_SERVER_API_HOST:$PREFECT_SERVER_API_PORT/api}

# The server is no client of another server, and has no use for the other services' secrets.
drop PREFECT_API_URL MLFLOW_BACKEND_STORE_URI AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY

echo "Prefect server on http://$PREFECT_SERVER_API_HOST:$PREFECT_SERVER_API_PORT (UI calls $PREFECT_UI_API_URL)," \
    "database $(mask "$PREFECT_API_DATABASE_CONNECTION_URL")"
exec "$LMFORGE_VENV/bin/prefect" server start "$@"
