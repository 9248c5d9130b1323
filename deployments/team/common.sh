# Sourced by prefect-server.sh, mlflow-server.sh and worker.sh: reads the team's env file and
# finds lmforge's virtual environment. Not meant to be run on its own.
#
#   LMFORGE_ENV_FILE  the env file to read (default: team.env beside this script; `-` reads none,
#                     when the settings are already in the environment, e.g. from Docker)
#   LMFORGE_HOME      the lmforge checkout (default: two folders up from here)
#   LMFORGE_VENV      its virtual environment (default: $LMFORGE_HOME/.venv)
#
# Nothing here prints a setting's value: the env file holds passwords. URLs are printed masked.

set -euo pipefail

TEAM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
    echo "error: $*" >&2
    exit 2
}

env_file=${LMFORGE_ENV_FILE:-$TEAM_DIR/team.env}
if [[ $env_file != - ]]; then
    [[ -f $env_file ]] || die "no env file $env_file: copy $TEAM_DIR/team.env.example there and change the values marked CHANGE (or set LMFORGE_ENV_FILE)"
    perms=$(stat -c %a "$env_file" 2>/dev/null || echo 600)
    if [[ ${perms: -2} != 00 ]]; then
        echo "warning: $env_file is readable by other users (mode $perms); it holds passwords: chmod 600 $env_file" >&2
    fi
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
fi

LMFORGE_HOME=${LMFORGE_HOME:-$(cd "$TEAM_DIR/../.." && pwd)}
LMFORGE_VENV=${LMFORGE_VENV:-$LMFORGE_HOME/.venv}
[[ -x $LMFORGE_VENV/bin/python ]] || die "no virtual environment at $LMFORGE_VENV (set LMFORGE_HOME or LMFORGE_VENV; ./forge run creates it)"
export PATH="$LMFORGE_VENV/bin:$PATH"

# No usage data leaves the team's machines.
export DO_NOT_TRACK=${DO_NOT_TRACK:-true}
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}
export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}

require() {
    local name
    for name in "$@"; do
        [[ -n ${!name:-} ]] || die "$name is not set (see team.env.example)"
        [[ ${!name} != *CHANGE-ME* ]] || die "$name still holds the placeholder CHANGE-ME (see team.env.example)"
    done
}

mask() {
    # postgresql://user:secret@host/db -> postgresql://user:***@host/db
    sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#' <<<"$1"
}

# Secrets of the other services: a process gets only what it needs (a flow run inherits its
# worker's environment, and a worker has no business with database passwords).
drop() {
    unset "$@"
}
