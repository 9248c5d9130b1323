#!/usr/bin/env bash
# The team's MLflow tracking server and model registry, on PostgreSQL, with artifacts in an
# S3-compatible object store (MinIO, S3, ...) that clients reach through this server.
#
#   LMFORGE_ENV_FILE=/etc/lmforge/team.env deployments/team/mlflow-server.sh
#
# Reads from the env file (see team.env.example): MLFLOW_BACKEND_STORE_URI,
# MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/path or a local folder), and for s3://
# MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; MLFLOW_HOST (default
# 127.0.0.1), MLFLOW_PORT (default 5000), MLFLOW_WORKERS, MLFLOW_SERVER_ALLOWED_HOSTS.
# `mlflow server` reads every one of them from its environment: nothing secret on its command
# line. Extra arguments go to `mlflow server`. Runs in the foreground until SIGTERM/SIGINT
# (systemd: lmforge-mlflow.service).

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require MLFLOW_BACKEND_STORE_URI MLFLOW_ARTIFACTS_DESTINATION
case $MLFLOW_ARTIFACTS_DESTINATION in
    s3://*)
        require AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
        "$LMFORGE_VENV/bin/python" -c "import boto3" 2>/dev/null \
            || die "artifacts in S3 need boto3 in $LMFORGE_VENV: $LMFORGE_VENV/bin/pip install -e \"$LMFORGE_HOME[s3]\""
        ;;
    *://*) ;;
    *) mkdir -p "$MLFLOW_ARTIFACTS_DESTINATION" ;;
esac
export MLFLOW_HOST=${MLFLOW_HOST:-127.0.0.1}
export MLFLOW_PORT=${MLFLOW_PORT:-5000}
export MLFLOW_SERVE_ARTIFACTS=true  # clients upload and download artifacts through this server

drop PREFECT_API_URL PREFECT_API_DATABASE_CONNECTION_URL

echo "MLflow server on http://$MLFLOW_HOST:$MLFLOW_PORT, backend $(mask "$MLFLOW_BACKEND_STORE_URI")," \
    "artifacts in $MLFLOW_ARTIFACTS_DESTINATION${MLFLOW_S3_ENDPOINT_URL:+ (endpoint $MLFLOW_S3_ENDPOINT_URL)}"
exec "$LMFORGE_VENV/bin/mlflow" server "$@"
