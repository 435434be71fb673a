-- The runtime role's privileges on botconsole's tables. Apply after EVERY `manage.py migrate`,
-- connected as the owner (the role that ran migrate), with the runtime role's name in the setting
-- botconsole.runtime_role. Usually through Django:
--
--   manage.py db_grant_runtime botconsole_app
--
-- or with psql:
--
--   PGOPTIONS='-c botconsole.runtime_role=botconsole_app' psql -v ON_ERROR_STOP=1 \
--       "postgres://botconsole_owner@db/botconsole" -f deploy/postgres/grant-runtime.sql
--
-- In the current schema, for every table the owner owns:
--   audit_*            SELECT, INSERT: the audit log and its checkpoints are append-only for the
--                      processes that write them (the triggers refuse UPDATE/DELETE/TRUNCATE even
--                      to the owner; this refuses them before a trigger is reached)
--   django_migrations  SELECT: only migrate writes it (materialized views too: SELECT)
--   everything else    SELECT, INSERT, UPDATE, DELETE (never TRUNCATE, REFERENCES or TRIGGER)
--   sequences          USAGE, SELECT (nextval for inserts; setval needs UPDATE, not granted)
-- Privileges are replaced, not added to: a table that moved into audit_* loses UPDATE.
-- There are deliberately no ALTER DEFAULT PRIVILEGES: a table created by a later migration stays
-- closed to the runtime role until this runs again, so a forgotten grant fails loudly and never
-- opens a new audit table for writing.

DO $grant$
DECLARE
    runtime name := nullif(current_setting('botconsole.runtime_role', true), '');
    runtime_oid oid;
    schema_name name := current_schema();
    foreign_tables text;
    obj record;
BEGIN
    IF runtime IS NULL THEN
        RAISE EXCEPTION 'set botconsole.runtime_role to the name of the runtime role';
    END IF;
    SELECT oid INTO runtime_oid FROM pg_roles WHERE rolname = runtime;
    IF runtime_oid IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist (deploy/postgres/roles.sql creates it)', runtime;
    END IF;
    IF runtime = current_user THEN
        RAISE EXCEPTION 'role "%" owns the tables; the runtime role must be another role', runtime;
    END IF;
    IF EXISTS (
        SELECT 1 FROM pg_roles
        WHERE oid = runtime_oid AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication)
    ) THEN
        RAISE EXCEPTION 'role "%" is too powerful for the runtime role: it must not be a superuser, '
            'create roles or databases, replicate or bypass row security', runtime;
    END IF;
    IF pg_has_role(runtime, current_user, 'MEMBER') THEN
        RAISE EXCEPTION 'role "%" is a member of "%", the owner of the tables, and so has its rights', runtime, current_user;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class WHERE relowner = runtime_oid) THEN
        RAISE EXCEPTION 'role "%" owns tables in this database; the runtime role must own nothing', runtime;
    END IF;

    SELECT string_agg(c.relname, ', ' ORDER BY c.relname) INTO foreign_tables
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = schema_name AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e');
    IF foreign_tables IS NOT NULL THEN
        RAISE EXCEPTION 'connected as "%", which does not own % in schema %: run this as the role that ran migrate',
            current_user, foreign_tables, schema_name;
    END IF;

    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', schema_name, runtime);
    FOR obj IN
        SELECT c.oid::regclass AS rel, c.relname, c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = schema_name AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
        ORDER BY c.relname
    LOOP
        IF obj.relkind = 'S' THEN
            EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %I', obj.rel, runtime);
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO %I', obj.rel, runtime);
            CONTINUE;
        END IF;
        EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', obj.rel, runtime);
        IF obj.relname LIKE 'audit\_%' THEN
            EXECUTE format('GRANT SELECT, INSERT ON TABLE %s TO %I', obj.rel, runtime);
        ELSIF obj.relname = 'django_migrations' OR obj.relkind = 'm' THEN
            EXECUTE format('GRANT SELECT ON TABLE %s TO %I', obj.rel, runtime);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE %s TO %I', obj.rel, runtime);
        END IF;
    END LOOP;
END
$grant$;
