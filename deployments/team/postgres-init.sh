#!/usr/bin/env bash
# Creates the two databases of the team servers, each owned by its own login role:
#   prefect  (Prefect server)   and   mlflow  (MLflow tracking store and model registry).
#
#   sudo -u postgres deployments/team/postgres-init.sh           # on the PostgreSQL host: asks for two passwords
#   PGHOST=db.internal PGUSER=postgres deployments/team/postgres-init.sh   # or from anywhere, as a superuser
#
# Settings (environment): PREFECT_DB_USER, PREFECT_DB_NAME (default prefect), MLFLOW_DB_USER,
# MLFLOW_DB_NAME (default mlflow), PREFECT_DB_PASSWORD, MLFLOW_DB_PASSWORD (asked for when unset);
# the connection: libpq's PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD.
# A password is hashed here (SCRAM-SHA-256, with python3 where there is one) and only its hash
# goes to the server, on psql's standard input: never on a command line, and never in the
# server's log, even with log_statement = 'ddl'. Re-running it sets the passwords again and
# changes nothing else. It is also the postgres container's init script in docker-compose.yml.
# PostgreSQL 13 or newer: Prefect creates the pg_trgm extension, which a database owner may since 13.

set -euo pipefail

ask() {
    local name=$1 value
    if [[ -z ${!name:-} ]]; then
        [[ -t 0 ]] || { echo "error: $name is not set" >&2; exit 2; }
        read -rsp "password for the ${2} database role: " value && echo
        printf -v "$name" %s "$value"
    fi
}

PREFECT_DB_USER=${PREFECT_DB_USER:-prefect}
PREFECT_DB_NAME=${PREFECT_DB_NAME:-prefect}
MLFLOW_DB_USER=${MLFLOW_DB_USER:-mlflow}
MLFLOW_DB_NAME=${MLFLOW_DB_NAME:-mlflow}
ask PREFECT_DB_PASSWORD "$PREFECT_DB_USER"
ask MLFLOW_DB_PASSWORD "$MLFLOW_DB_USER"

scram() {
    # PostgreSQL's SCRAM-SHA-256 verifier of the password on standard input (what `\password` sends)
    python3 -c '
import base64, hashlib, hmac, os, sys
password, salt, rounds = sys.stdin.read().encode(), os.urandom(16), 4096
salted = hashlib.pbkdf2_hmac("sha256", password, salt, rounds)
client_key, server_key = (hmac.new(salted, name, "sha256").digest() for name in (b"Client Key", b"Server Key"))
b64 = lambda b: base64.b64encode(b).decode()
print("SCRAM-SHA-256$%d:%s$%s:%s" % (rounds, b64(salt), b64(hashlib.sha256(client_key).digest()), b64(server_key)))
'
}

ident() {
    [[ $1 =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "error: not a plain lower-case SQL name: $1" >&2; exit 2; }
    printf %s "$1"
}

sql() {
    local user db password
    user=$(ident "$1") db=$(ident "$2")
    if command -v python3 >/dev/null; then
        password=$(printf %s "$3" | scram)
    else  # (the postgres container has no python3; its first-start server logs no statements)
        echo "warning: no python3: the password goes to the server in clear (logged if log_statement is ddl or all)" >&2
        password=${3//\'/\'\'}
    fi
    cat <<SQL
SELECT 'CREATE ROLE $user LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user')\gexec
ALTER ROLE $user LOGIN PASSWORD '$password';
SELECT 'CREATE DATABASE $db OWNER $user' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db')\gexec
SQL
}

{
    sql "$PREFECT_DB_USER" "$PREFECT_DB_NAME" "$PREFECT_DB_PASSWORD"
    sql "$MLFLOW_DB_USER" "$MLFLOW_DB_NAME" "$MLFLOW_DB_PASSWORD"
} | psql --quiet --no-psqlrc -v ON_ERROR_STOP=1 --echo-errors -f - >/dev/null
echo "databases ready: $PREFECT_DB_NAME (owner $PREFECT_DB_USER), $MLFLOW_DB_NAME (owner $MLFLOW_DB_USER)"
