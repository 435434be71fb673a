from __future__ import annotations

import itertools
import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from apps.accounts.models import User
from apps.audit.chain import GENESIS_HASH
from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify_chain, record

pytestmark = pytest.mark.django_db


def _write(n: int, prefix: str = "test.action") -> None:
    for i in range(n):
        record(actor="system:test", action=prefix, target=("thing", i), data={"i": i})


def _tamper(sql: str, params: list[str] | None = None) -> None:
    """Change the table the way a database superuser could: triggers off, edit, triggers on."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses pending FK checks
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER USER")
        cursor.execute(sql, params or [])
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER USER")


def test_entries_form_a_gapless_linked_chain() -> None:
    user = User.objects.create_user(username="alice", password="x" * 16)
    record(actor=user, action="bot.start", target=("bot", 7), data={"before": {"a": 1}, "after": {"a": 2}})
    _write(4)

    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert entries[0].actor == "alice" and entries[0].actor_user_id == user.pk
    assert (entries[0].target_type, entries[0].target_id) == ("bot", "7")
    report = audit_verify_chain()
    assert report.ok and report.checked == 5 and report.last_hash == entries[-1].hash


def test_a_rolled_back_writer_leaves_no_gap() -> None:
    _write(1)
    with pytest.raises(RuntimeError), transaction.atomic():
        record(actor="system:test", action="doomed")
        raise RuntimeError("roll back")
    _write(1)
    assert list(AuditEntry.objects.values_list("seq", flat=True)) == [1, 2]
    assert audit_verify_chain().ok


def test_it_refuses_an_actor_that_is_neither_user_nor_system() -> None:
    with pytest.raises(ValueError, match="system:"):
        record(actor="mallory", action="x")
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_auditentry SET action = 'nothing.happened' WHERE seq = 1",
        "DELETE FROM audit_auditentry WHERE seq = 1",
        "TRUNCATE audit_auditentry",
    ],
)
def test_it_refuses_raw_sql_changes(sql: str) -> None:
    _write(2)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # so TRUNCATE reaches the trigger
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert list(AuditEntry.objects.values_list("seq", "action")) == [(1, "test.action"), (2, "test.action")]


def test_verify_catches_a_row_altered_with_triggers_disabled() -> None:
    _write(5)
    _tamper("UPDATE audit_auditentry SET data = '{\"i\": 99}' WHERE seq = 3")

    report = audit_verify_chain()
    assert not report.ok and report.broken_seq == 3 and report.checked == 2
    with pytest.raises(CommandError, match="BROKEN at #3"):
        call_command("audit_verify")


def test_verify_catches_a_row_whose_hash_was_recomputed() -> None:
    # A forger who edits a row and rewrites its hash still breaks the next row's prev_hash.
    _write(4)
    from apps.audit.chain import entry_hash

    e = AuditEntry.objects.get(seq=2)
    forged = entry_hash(
        seq=2,
        created_at=e.created_at,
        actor_user_id=None,
        actor=e.actor,
        ip=None,
        otp_verified=False,
        action="forged",
        target_type=e.target_type,
        target_id=e.target_id,
        data=e.data,
        prev_hash=e.prev_hash,
    )
    _tamper("UPDATE audit_auditentry SET action = 'forged', hash = %s WHERE seq = 2", [forged])
    report = audit_verify_chain()
    assert (report.ok, report.broken_seq) == (False, 3)


def test_verify_catches_a_deleted_row() -> None:
    _write(5)
    _tamper("DELETE FROM audit_auditentry WHERE seq = 4")
    report = audit_verify_chain()
    assert (report.ok, report.broken_seq) == (False, 4)
    assert "missing" in report.reason


def test_audit_verify_command_reports_an_intact_chain(capsys: pytest.CaptureFixture[str]) -> None:
    _write(3)
    call_command("audit_verify")
    assert "audit chain OK: 3 entries verified up to #3" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_eight_concurrent_writers_keep_one_unbroken_chain() -> None:
    writers, per_writer = 8, 25
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                record(actor="system:test", action=f"writer.{n}", data={"i": i})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    seqs = list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, writers * per_writer + 1))
    # Writers really interleaved (otherwise this proves nothing about concurrency).
    actions = list(AuditEntry.objects.order_by("seq").values_list("action", flat=True))
    switches = sum(1 for a, b in itertools.pairwise(actions) if a != b)
    assert switches > writers
    report = audit_verify_chain()
    assert report.ok and report.checked == writers * per_writer
