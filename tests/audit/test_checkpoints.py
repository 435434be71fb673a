"""Signed checkpoints, and verification catching every kind of tampering with the log."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from apps.alerts.models import Alert
from apps.audit.chain import checkpoint_message
from apps.audit.checkpoints import (
    VerifyReport,
    audit_checkpoint_create,
    audit_verify,
    checkpoint_file_read,
)
from apps.audit.models import AuditCheckpoint, AuditEntry, AuditVerification
from apps.audit.services import record
from apps.audit.tasks import audit_checkpoint_task, audit_verify_task
from apps.core.files import pg_bin
from apps.vault import client as vault
from tests.harness import Harness

pytestmark = pytest.mark.django_db


def _write(n: int, action: str = "test.action") -> None:
    for i in range(n):
        record(actor="system:test", action=action, target=("thing", i), data={"i": i})


def _tamper(*statements: str) -> None:
    """Change the table the way a database superuser could: triggers off, edit, triggers on."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses pending FK checks
        for table in ("audit_auditentry", "audit_auditcheckpoint"):
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for sql in statements:
            cursor.execute(sql)
        for table in ("audit_auditentry", "audit_auditcheckpoint"):
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def _checkpoint(pv: vault.ProcessVault) -> int:
    result = audit_checkpoint_create(source="system:test", process_vault=pv)
    assert result.report.ok and result.checkpoint is not None, result.report.problems
    return result.checkpoint.seq


def _verify(pv: vault.ProcessVault) -> VerifyReport:
    return audit_verify(source="system:test", process_vault=pv)


def _tamper_alerts() -> list[Alert]:
    return list(Alert.objects.filter(kind="audit_tampered"))


def _messages(report: VerifyReport) -> str:
    return " | ".join(p.message for p in report.problems)


# -- making checkpoints ----------------------------------------------------------------------------


def test_a_checkpoint_is_signed_and_stored_in_the_database_and_the_file(
    control_vault: vault.ProcessVault, checkpoint_file: Path
) -> None:
    _write(5)
    head = AuditEntry.objects.order_by("-seq").first()
    assert head is not None
    assert _checkpoint(control_vault) == head.seq

    row = AuditCheckpoint.objects.get()
    assert (row.seq, row.entry_hash) == (head.seq, head.hash)
    assert row.signature.startswith("vault:v1:")
    in_file, problems = checkpoint_file_read(checkpoint_file)
    assert problems == [] and [(c.seq, c.entry_hash, c.signature) for c in in_file] == [
        (row.seq, row.entry_hash, row.signature)
    ]
    message = checkpoint_message(seq=row.seq, entry_hash=row.entry_hash, signed_at=row.signed_at)
    assert control_vault.transit_verify_many(vault.AUDIT_CHECKPOINT_KEY, [(message, row.signature)]) == [True]
    # The signature covers the seq: the same signature over another seq is refused.
    other = checkpoint_message(seq=row.seq - 1, entry_hash=row.entry_hash, signed_at=row.signed_at)
    assert control_vault.transit_verify_many(vault.AUDIT_CHECKPOINT_KEY, [(other, row.signature)]) == [False]

    report = _verify(control_vault)
    assert report.ok and report.checkpoints_checked == 1 and report.last_seq == head.seq


def test_the_file_is_only_appended_to(control_vault: vault.ProcessVault, checkpoint_file: Path) -> None:
    _write(3)
    _checkpoint(control_vault)
    first = checkpoint_file.read_bytes()

    again = audit_checkpoint_create(source="system:test", process_vault=control_vault)
    assert not again.created and again.report.ok  # nothing new: no second checkpoint of the same entry
    assert checkpoint_file.read_bytes() == first and AuditCheckpoint.objects.count() == 1

    _write(2)
    second_seq = _checkpoint(control_vault)
    now = checkpoint_file.read_bytes()
    assert now.startswith(first) and now.count(b"\n") == 2  # the old line untouched, one line added
    assert list(AuditCheckpoint.objects.values_list("seq", flat=True)) == [second_seq - 2, second_seq]
    assert _verify(control_vault).checkpoints_checked == 2


def test_the_checkpoint_table_refuses_changes(control_vault: vault.ProcessVault) -> None:
    _write(2)
    _checkpoint(control_vault)
    for sql in ["UPDATE audit_auditcheckpoint SET seq = 1", "DELETE FROM audit_auditcheckpoint"]:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
            c.execute(sql)
    assert AuditCheckpoint.objects.count() == 1


def test_the_web_process_cannot_sign_a_checkpoint(web_vault: vault.ProcessVault, checkpoint_file: Path) -> None:
    _write(2)
    with pytest.raises(vault.VaultForbidden):
        audit_checkpoint_create(source="system:test", process_vault=web_vault)
    assert not AuditCheckpoint.objects.exists() and not checkpoint_file.exists()
    assert AuditVerification.objects.get().status == AuditVerification.Status.ERROR


# -- tampering, each case detected ------------------------------------------------------------------


def test_a_row_edited_with_triggers_disabled_is_detected_and_alerted(control_vault: vault.ProcessVault) -> None:
    _write(6)
    _checkpoint(control_vault)
    _tamper("UPDATE audit_auditentry SET data = '{\"i\": 99}' WHERE seq = 3")

    report = _verify(control_vault)
    assert not report.ok and report.broken_seq == 3
    assert "content does not match its hash" in report.reason
    [alert] = _tamper_alerts()
    assert alert.severity == "critical" and "#3" in alert.message
    stored = AuditVerification.objects.order_by("-finished_at").first()
    assert stored is not None and stored.status == "broken" and stored.broken_seq == 3


def test_a_chain_rewritten_from_scratch_is_caught_by_the_checkpoint(control_vault: vault.ProcessVault) -> None:
    # Someone with database rights edits #2 and recomputes every hash after it: the chain is
    # consistent again, but no longer matches what was signed.
    from apps.audit.chain import entry_hash

    _write(4)
    signed_seq = _checkpoint(control_vault)
    rows = list(AuditEntry.objects.order_by("seq"))
    prev, statements = rows[0].prev_hash, []
    for e in rows:
        action = "forged" if e.seq == 2 else e.action
        new = entry_hash(
            seq=e.seq,
            created_at=e.created_at,
            actor_user_id=e.actor_user_id,
            actor=e.actor,
            ip=e.ip,
            otp_verified=e.otp_verified,
            action=action,
            target_type=e.target_type,
            target_id=e.target_id,
            data=e.data,
            prev_hash=prev,
        )
        statements.append(
            f"UPDATE audit_auditentry SET action = '{action}', prev_hash = '{prev}', hash = '{new}' WHERE seq = {e.seq}"
        )
        prev = new
    _tamper(*statements)

    from apps.audit.services import audit_verify_chain

    assert audit_verify_chain().ok  # the chain alone is fooled
    report = _verify(control_vault)
    assert not report.ok and report.broken_seq == signed_seq
    assert "no longer has the hash its signed checkpoint holds" in report.reason


def test_deleting_the_last_rows_is_detected(control_vault: vault.ProcessVault) -> None:
    _write(6)
    head = _checkpoint(control_vault)
    _tamper(f"DELETE FROM audit_auditentry WHERE seq > {head - 2}")

    report = _verify(control_vault)
    assert not report.ok and report.broken_seq == head - 1
    assert f"the log ends at #{head - 2} but entry #{head} was signed" in report.reason
    assert len(_tamper_alerts()) == 1


def test_two_swapped_rows_are_detected(control_vault: vault.ProcessVault) -> None:
    _write(6)
    _checkpoint(control_vault)
    _tamper(
        "UPDATE audit_auditentry SET seq = -1 WHERE seq = 3",
        "UPDATE audit_auditentry SET seq = 3 WHERE seq = 4",
        "UPDATE audit_auditentry SET seq = 4 WHERE seq = -1",
    )
    report = _verify(control_vault)
    assert not report.ok and report.broken_seq == 3
    assert len(_tamper_alerts()) == 1


def test_a_forged_checkpoint_fails_signature_verification(
    control_vault: vault.ProcessVault, checkpoint_file: Path
) -> None:
    _write(4)
    _checkpoint(control_vault)
    real = AuditCheckpoint.objects.get()
    _write(2)
    head = AuditEntry.objects.order_by("-seq").first()
    assert head is not None
    # A forger with database and file access, but without the Vault key, reuses a real signature.
    _tamper(
        "INSERT INTO audit_auditcheckpoint (seq, entry_hash, signed_at, signature) "
        f"VALUES ({head.seq}, '{head.hash}', now(), '{real.signature}')"
    )
    forged = AuditCheckpoint.objects.get(seq=head.seq)
    from apps.audit.checkpoints import SignedCheckpoint, checkpoint_file_append

    checkpoint_file_append(checkpoint_file, SignedCheckpoint.from_model(forged))

    report = _verify(control_vault)
    assert not report.ok and report.broken_seq == head.seq
    assert f"checkpoint #{head.seq} has an invalid signature" in report.reason


def test_a_truncated_or_edited_checkpoint_file_is_detected(
    control_vault: vault.ProcessVault, checkpoint_file: Path
) -> None:
    _write(3)
    first = _checkpoint(control_vault)
    _write(3)
    second = _checkpoint(control_vault)
    lines = checkpoint_file.read_bytes().splitlines(keepends=True)

    checkpoint_file.write_bytes(lines[0])  # the last line cut off
    report = _verify(control_vault)
    assert not report.ok and f"the checkpoint file lacks signed checkpoint #{second}" in _messages(report)

    checkpoint_file.write_bytes(lines[0].replace(b'"seq":', b'"seq":1', 1) + lines[1])  # a seq edited
    report = _verify(control_vault)
    assert not report.ok and f"the checkpoint file lacks signed checkpoint #{first}" in _messages(report)

    checkpoint_file.unlink()  # the file gone
    report = _verify(control_vault)
    assert not report.ok and f"the checkpoint file lacks signed checkpoint #{first}" in _messages(report)


def _dump_params() -> tuple[list[str], dict[str, str]]:
    p = connection.get_connection_params()
    return ["-h", p["host"], "-p", str(p["port"]), "-U", p["user"], "-d", p["dbname"]], {"PGPASSWORD": p["password"]}


@pytest.mark.django_db(transaction=True)
def test_a_database_rolled_back_to_an_earlier_dump_is_detected(
    control_vault: vault.ProcessVault, tmp_path: Path
) -> None:
    _write(3)
    _checkpoint(control_vault)
    # A real dump of both audit tables, as a backup would take it.
    args, env = _dump_params()
    dump = tmp_path / "audit.sql"
    subprocess.run(
        [
            str(pg_bin("pg_dump")),
            *args,
            "--data-only",
            "-t",
            "audit_auditentry",
            "-t",
            "audit_auditcheckpoint",
            "-f",
            str(dump),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    _write(3)
    signed_later = _checkpoint(control_vault)

    # Roll the tables back to the dump (the checkpoint file, outside the database, stays as it is).
    _tamper("TRUNCATE audit_auditentry, audit_auditcheckpoint")
    connection.close()
    subprocess.run(
        [str(pg_bin("psql")), *args, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(dump)],
        env=env,
        check=True,
        capture_output=True,
    )
    assert AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() == 3

    from apps.audit.services import audit_verify_chain

    assert audit_verify_chain().ok  # what is left is a perfectly valid chain
    report = _verify(control_vault)
    assert not report.ok and report.broken_seq == 4
    text = _messages(report)
    assert f"the database lacks signed checkpoint #{signed_later}" in text
    assert f"the log ends at #3 but entry #{signed_later} was signed" in text
    assert len(_tamper_alerts()) == 1

    # New entries written after the rollback reach the signed seq again, with other hashes.
    _write(6)
    report = _verify(control_vault)
    assert not report.ok
    assert f"entry #{signed_later} no longer has the hash its signed checkpoint holds" in _messages(report)
    # And no checkpoint is signed over the rolled-back log.
    refused = audit_checkpoint_create(source="system:test", process_vault=control_vault)
    assert not refused.created and not refused.report.ok
    assert AuditCheckpoint.objects.count() == 1


def test_no_checkpoint_is_signed_over_a_tampered_log(control_vault: vault.ProcessVault, checkpoint_file: Path) -> None:
    _write(3)
    _checkpoint(control_vault)
    _write(3)
    _tamper("UPDATE audit_auditentry SET action = 'nothing.happened' WHERE seq = 5")
    before = checkpoint_file.read_bytes()

    result = audit_checkpoint_create(source="system:test", process_vault=control_vault)
    assert not result.created and result.report.broken_seq == 5
    assert AuditCheckpoint.objects.count() == 1 and checkpoint_file.read_bytes() == before
    [alert] = _tamper_alerts()
    assert alert.severity == "critical"


def test_a_lasting_break_alerts_once_and_a_new_break_again(control_vault: vault.ProcessVault) -> None:
    _write(6)
    _checkpoint(control_vault)
    _tamper("UPDATE audit_auditentry SET data = '{}' WHERE seq = 5")
    _verify(control_vault)
    _verify(control_vault)
    assert len(_tamper_alerts()) == 1
    _tamper("UPDATE audit_auditentry SET data = '{}' WHERE seq = 2")
    assert _verify(control_vault).broken_seq == 2
    assert len(_tamper_alerts()) == 2


# -- the control worker's tasks and the commands ----------------------------------------------------


def test_the_tasks_use_the_control_workers_vault_token(services: Harness, settings: Any) -> None:
    settings.VAULT_TOKEN = services.tokens["control"].token  # what the control worker runs with
    _write(3)
    seq = audit_checkpoint_task()
    assert seq is not None and AuditCheckpoint.objects.filter(seq=seq).exists()
    assert audit_verify_task() is True
    _tamper(f"DELETE FROM audit_auditentry WHERE seq = {seq}")
    assert audit_verify_task() is False
    assert len(_tamper_alerts()) == 1


def test_the_commands(services: Harness, settings: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _write(3)
    with pytest.raises(CommandError, match="no checkpoint signed: permission denied"):
        call_command("audit_checkpoint")  # the web token (the test default) may not sign
    settings.VAULT_TOKEN = services.tokens["control"].token
    call_command("audit_checkpoint")
    assert "checkpoint #3 signed" in capsys.readouterr().out
    call_command("audit_checkpoint")
    assert "nothing new since checkpoint #3" in capsys.readouterr().out
    call_command("audit_verify")
    assert "1 signed checkpoints verified, the last #3" in capsys.readouterr().out

    settings.VAULT_TOKEN = services.tokens["web"].token
    with pytest.raises(CommandError, match="could not check the checkpoint signatures"):
        call_command("audit_verify")
    settings.VAULT_TOKEN = services.tokens["control"].token
    _tamper("DELETE FROM audit_auditentry WHERE seq = 3")
    with pytest.raises(CommandError, match=r"BROKEN at #3: the log ends at #2 but entry #3 was signed"):
        call_command("audit_verify")
