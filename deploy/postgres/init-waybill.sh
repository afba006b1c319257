#!/usr/bin/env bash
# The postgres image runs this once, when it initialises an empty data volume. It does what
# launcher.provision.provision_postgres does for `make up`: one database and one login role
# per alias in WAYBILL_DATABASE_ALIASES ("default", the identity store, and each context),
# named waybill_<alias>. A role owns its database and the public schema in it, may create
# neither databases nor roles, and can connect to nothing else: CONNECT is revoked from
# PUBLIC on every database, postgres and template1 included. Passwords come from
# WAYBILL_<ALIAS>_DB_PASSWORD (docker-compose.yml sets them all).
set -e

sql() { psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" "$@"; }

sql --dbname postgres <<'SQL'
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;
SQL

for alias in ${WAYBILL_DATABASE_ALIASES:?}; do
    name="waybill_${alias}"
    password_variable="WAYBILL_${alias^^}_DB_PASSWORD"
    # psql quotes :"name" as an identifier and :'password' as a literal.
    sql --dbname postgres -v name="$name" -v password="${!password_variable:?$password_variable is not set}" <<'SQL'
CREATE ROLE :"name" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"name" TO :"name";
SQL
    sql --dbname "$name" -v name="$name" <<'SQL'
ALTER SCHEMA public OWNER TO :"name";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SQL
    echo "waybill: database and role $name"
done
