#!/bin/sh
# Runs once, when the PostgreSQL container initialises an empty data directory: botconsole's owner
# and runtime roles and database (deploy/postgres/roles.sql), with passwords from the secret files.
set -eu
owner_password=$(cat /run/secrets/db_owner_password)
runtime_password=$(cat /run/secrets/db_runtime_password)
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner=botconsole_owner -v runtime=botconsole_app -v dbname=botconsole \
    -f /opt/botconsole/roles.sql
# The passwords reach psql through its environment (\getenv), never a command line, and go in as
# quoted literals (:'...').
OWNER_PASSWORD=$owner_password RUNTIME_PASSWORD=$runtime_password \
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
\getenv owner_password OWNER_PASSWORD
\getenv runtime_password RUNTIME_PASSWORD
ALTER ROLE botconsole_owner PASSWORD :'owner_password';
ALTER ROLE botconsole_app PASSWORD :'runtime_password';
SQL
