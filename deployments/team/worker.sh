#!/usr/bin/env bash
# A Prefect worker: polls the `process` work pool that `lmforge deploy --pool lmforge` registers
# lmforge's deployments to, and runs each flow run as a subprocess in lmforge's virtual
# environment (start one per machine that should run flows: a GPU node, a data node, ...).
#
#   LMFORGE_ENV_FILE=/etc/lmforge/team.env deployments/team/worker.sh
#
# Reads from the env file (see team.env.example): PREFECT_API_URL, LMFORGE_WORK_POOL (default
# lmforge), LMFORGE_WORKER_NAME (default: Prefect's), PREFECT_HOME,
# PREFECT_RESULTS_LOCAL_STORAGE_PATH. Extra arguments go to `prefect worker start`.
# Runs in the foreground until SIGTERM/SIGINT (systemd: lmforge-worker.service).
#
# Flow runs inherit this environment. They need no database password and no object-store key:
# they talk to the Prefect API and to the MLflow server (whose URL is in the run's config,
# `tracking.tracking_uri`), which stores artifacts for them. So those secrets are dropped here.

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require PREFECT_API_URL
pool=${LMFORGE_WORK_POOL:-lmforge}
drop PREFECT_API_DATABASE_CONNECTION_URL MLFLOW_BACKEND_STORE_URI AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY

cd "$LMFORGE_HOME"  # flows are imported by module path (flows.data.data_flow) from this checkout
args=(worker start --pool "$pool" --type process)
[[ -n ${LMFORGE_WORKER_NAME:-} ]] && args+=(--name "$LMFORGE_WORKER_NAME")
echo "Prefect worker for pool $pool of $PREFECT_API_URL, running flows with $LMFORGE_VENV/bin/python"
exec "$LMFORGE_VENV/bin/prefect" "${args[@]}" "$@"
