"""Checkpoints are append-only like the log; a trigram index makes the audit page's text search usable.

The index expression must stay identical to apps.audit.selectors.SEARCH_EXPRESSION, or
PostgreSQL will not use it. pg_trgm is a trusted extension: the database owner may create it.
"""

from django.db import migrations

CHECKPOINT_TRIGGERS = """
CREATE TRIGGER audit_checkpoint_refuse_update_delete
    BEFORE UPDATE OR DELETE ON audit_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoint_refuse_truncate
    BEFORE TRUNCATE ON audit_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
"""

DROP_CHECKPOINT_TRIGGERS = """
DROP TRIGGER IF EXISTS audit_checkpoint_refuse_truncate ON audit_auditcheckpoint;
DROP TRIGGER IF EXISTS audit_checkpoint_refuse_update_delete ON audit_auditcheckpoint;
"""

SEARCH_INDEX = """
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX audit_entry_search_trgm ON audit_auditentry USING gin (
    lower(action || ' ' || actor || ' ' || target_type || ' ' || target_id || ' ' || data::text) gin_trgm_ops
);
"""

DROP_SEARCH_INDEX = "DROP INDEX IF EXISTS audit_entry_search_trgm;"


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_checkpoints_verifications")]
    operations = [
        migrations.RunSQL(CHECKPOINT_TRIGGERS, DROP_CHECKPOINT_TRIGGERS),
        migrations.RunSQL(SEARCH_INDEX, DROP_SEARCH_INDEX),
    ]
