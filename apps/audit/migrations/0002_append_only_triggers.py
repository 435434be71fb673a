"""Make the audit table append-only in the database itself.

Triggers refuse UPDATE, DELETE and TRUNCATE for every role, including the table owner,
unless someone with owner rights first disables them; the hash chain (audit_verify)
catches what such a person changes.
"""

from django.db import migrations

INSTALL = """
CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_refuse_update_delete
    BEFORE UPDATE OR DELETE ON audit_auditentry
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_refuse_truncate
    BEFORE TRUNCATE ON audit_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
"""

REMOVE = """
DROP TRIGGER IF EXISTS audit_refuse_truncate ON audit_auditentry;
DROP TRIGGER IF EXISTS audit_refuse_update_delete ON audit_auditentry;
DROP FUNCTION IF EXISTS audit_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunSQL(INSTALL, REMOVE)]
