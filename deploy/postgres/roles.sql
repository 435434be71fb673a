-- botconsole's PostgreSQL roles and database. Run once, as a superuser, with psql 15 or later:
--
--   psql -v ON_ERROR_STOP=1 -v owner=botconsole_owner -v runtime=botconsole_app -v dbname=botconsole \
--        -f deploy/postgres/roles.sql
--
-- then give both roles a password with psql's \password (it hashes on the client, so the
-- password never reaches the server's log in clear):
--
--   \password botconsole_owner
--   \password botconsole_app
--
-- Two roles, because the process that serves requests must not be able to rewrite history:
--   owner    owns the database, its schema and every table; only `manage.py migrate` and
--            `manage.py db_grant_runtime` connect as it (the botconsole-migrate unit).
--   runtime  what web, the workers, beat and the fleet connect as. It owns nothing, so it can
--            neither ALTER a table nor disable the audit triggers; grant-runtime.sql gives it
--            read-write on ordinary tables and only SELECT + INSERT on the audit tables.
-- Neither is a superuser or may create roles or databases. Re-running this file changes nothing
-- that is already in place.

\if :{?owner}
\else
\set owner botconsole_owner
\endif
\if :{?runtime}
\else
\set runtime botconsole_app
\endif
\if :{?dbname}
\else
\set dbname botconsole
\endif

SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', :'owner')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner') \gexec

-- NOINHERIT: were the runtime role ever made a member of another role by mistake, it would still
-- not use that role's rights without an explicit SET ROLE (grant-runtime.sql refuses that case).
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT', :'runtime')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'runtime') \gexec

SELECT format('CREATE DATABASE %I OWNER %I ENCODING ''UTF8'' TEMPLATE template0', :'dbname', :'owner')
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'dbname') \gexec

ALTER DATABASE :"dbname" OWNER TO :"owner";
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"dbname" TO :"runtime";

\connect :"dbname"

-- PostgreSQL 15+ gives the public schema to the database owner (pg_database_owner) and no CREATE
-- to PUBLIC; say so explicitly for older clusters, and allow the runtime role in but not to create.
ALTER SCHEMA public OWNER TO pg_database_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"runtime";
