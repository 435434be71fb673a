"""`audit_append`: one audit entry appended in one statement, its hash finished in the database.

An append takes the chain's lock, reads the last (seq, hash), hashes and inserts. Done from Python
that is three round trips with the lock held (and the commit after them); with four writers the
lock, not the work, set the pace. This function does all of it inside the server: called on its
own (autocommit) the lock is held only for the insert and the commit.

The hash is the one apps.audit.chain.entry_hash defines, byte for byte: the caller sends the
canonical text of the entry without created_at, prev_hash and seq (apps.audit.chain.EntryText),
the function puts those three in, formatted as entry_hash formats them (created_at as UTC ISO 8601
with microseconds). Nothing is trusted: the verifier recomputes every hash from the stored fields.

A VOLATILE PL/pgSQL function takes a new snapshot for each statement (READ COMMITTED): the read of
the last entry, after the lock, sees the entry its previous holder committed.
"""

from django.db import migrations

INSTALL = r"""
CREATE FUNCTION audit_append(
    lock_key bigint,
    genesis_hash text,
    new_actor_user_id bigint,
    new_actor text,
    new_ip inet,
    new_otp_verified boolean,
    new_action text,
    new_target_type text,
    new_target_id text,
    new_data jsonb,
    text_head text,
    text_middle text,
    text_tail text
) RETURNS TABLE (entry_seq bigint, entry_created_at timestamptz, entry_prev_hash text, entry_hash text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    last_seq bigint;
    last_hash text;
    stamp timestamptz;
    new_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT e.seq, e.hash INTO last_seq, last_hash FROM audit_auditentry e ORDER BY e.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        last_seq := 0;
        last_hash := genesis_hash;
    END IF;
    stamp := clock_timestamp();  -- under the lock: created_at follows seq
    new_hash := encode(sha256(convert_to(
        text_head || to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')
        || text_middle || last_hash || '","seq":' || (last_seq + 1)::text || text_tail,
        'UTF8')), 'hex');
    INSERT INTO audit_auditentry (
        seq, created_at, actor_user_id, actor, ip, otp_verified, action, target_type, target_id, data,
        prev_hash, hash
    ) VALUES (
        last_seq + 1, stamp, new_actor_user_id, new_actor, new_ip, new_otp_verified, new_action,
        new_target_type, new_target_id, new_data, last_hash, new_hash
    );
    RETURN QUERY SELECT last_seq + 1, stamp, last_hash, new_hash;
END
$$;
"""

REMOVE = """
DROP FUNCTION IF EXISTS audit_append(
    bigint, text, bigint, text, inet, boolean, text, text, text, jsonb, text, text, text
);
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_checkpoint_triggers_search_index")]
    operations = [migrations.RunSQL(INSTALL, REMOVE)]
