"""The fast paths of the chain produce exactly the hash `entry_hash` defines.

The database finishes a new entry's hash (audit_append) and the verifier rebuilds each entry's text from
pieces; both must agree with `entry_hash` byte for byte, for any text a caller may quote, or a
genuine entry would be reported as tampered (or, worse, a tampered one pass).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit.chain import GENESIS_HASH, EntryText, canonical_time, entry_hash, json_parse, json_value
from apps.audit.context import Via
from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify_chain, record
from tests.people import make_person

HOSTILE = [
    '"',
    "\\",
    "\x01",
    "\b\f\n\r\t",
    "\x1f\x7f",
    "\u202e",
    "é",
    "\U0001f600",
    "\ufffd",
    "\u2028",
    "'",
    "</script>",
]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(HOSTILE) for _ in range(rng.randint(0, 6)))


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return _text(rng)
    if kind == 1:
        return rng.choice([0, -1, 7, 2**63, -(2**70)])
    if kind == 2:
        return rng.choice([0.1, -2.5, 1e-07, 1e300, 5e-324, -0.0, 1.0])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {_text(rng) + str(i): _value(rng, depth + 1) for i in range(rng.randint(0, 4))}


def _fields(rng: random.Random) -> dict[str, Any]:
    tz = timezone(timedelta(minutes=rng.randint(-600, 600)))
    return {
        "seq": rng.randint(1, 10**15),
        "created_at": datetime(2020, 1, 1, tzinfo=tz) + timedelta(microseconds=rng.randint(0, 10**15)),
        "actor_user_id": rng.choice([None, rng.randint(1, 10**12)]),
        "actor": _text(rng),
        "ip": rng.choice([None, "127.0.0.1", "2001:db8::1"]),
        "otp_verified": rng.choice([True, False]),
        "action": _text(rng),
        "target_type": _text(rng),
        "target_id": _text(rng),
        "data": {"k": _value(rng), _text(rng): _value(rng)},
        "prev_hash": f"{rng.getrandbits(256):064x}",
    }


def test_the_pieces_hash_as_entry_hash_does() -> None:
    rng = random.Random(13)  # noqa: S311 - reproducible test data
    for _ in range(3000):
        fields = _fields(rng)
        pieces = {k: v for k, v in fields.items() if k not in ("seq", "created_at", "prev_hash")}
        text = EntryText.of(**pieces)
        assert text.hash(seq=fields["seq"], created_at=fields["created_at"], prev_hash=fields["prev_hash"]) == (
            entry_hash(**fields)
        ), fields


def test_the_fast_json_reads_and_writes_as_the_json_module_does() -> None:
    rng = random.Random(14)  # noqa: S311
    for _ in range(3000):
        value = _value(rng)
        assert json_value(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        printed = json.dumps(value, ensure_ascii=rng.choice([True, False]))  # any valid JSON text
        parsed = json_parse(printed)
        assert json_value(parsed) == json_value(json.loads(printed))
    assert math.isnan(json_parse("NaN"))  # what json.loads accepts, it accepts, and it refuses the rest
    for odd in [" 1", "1 ", '\t{"a": [1, 2]}\n', "", "[1] x", "{", '"unterminated', "[1,]", "{'a': 1}"]:
        try:
            expected = json.loads(odd)
        except ValueError:
            with pytest.raises(ValueError):
                json_parse(odd)
        else:
            assert json_parse(odd) == expected


@pytest.mark.django_db
def test_the_database_writes_created_at_as_canonical_time() -> None:
    stamps = [
        datetime(2026, 12, 4, 17, 27, 27, 0, tzinfo=UTC),
        datetime(2026, 12, 4, 17, 27, 27, 500000, tzinfo=UTC),
        datetime(2026, 12, 4, 17, 27, 27, 10, tzinfo=UTC),
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    ]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL TimeZone = 'Asia/Kathmandu'")  # the session's zone must not matter
        for stamp in stamps:
            cursor.execute(
                "SELECT to_char(%s::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
                [stamp],
            )
            assert cursor.fetchone() == (canonical_time(stamp),)


@pytest.mark.django_db
def test_an_entry_hashed_by_the_database_has_the_hash_entry_hash_defines() -> None:
    user = make_person("hash-user").user
    rng = random.Random(15)  # noqa: S311
    written = [
        record(actor=user, action="test.user", target=("bot", 7), data={"before": {"a": 1.5}, "after": None}),
        *(
            record(actor="system:test", action=_text(rng), target=(_text(rng), _text(rng)), data=_fields(rng)["data"])
            for _ in range(30)
        ),
    ]
    fields = [f.attname for f in AuditEntry._meta.concrete_fields]
    stored = list(AuditEntry.objects.order_by("seq").values(*fields))  # the person's creation is audited too
    assert (
        [e.seq for e in written] == [s["seq"] for s in stored][-31:] == list(range(len(stored) - 30, len(stored) + 1))
    )
    for entry, row in zip(written, stored[-31:], strict=True):
        assert {name: getattr(entry, name) for name in fields} == row  # record() returns what is stored
        assert row["hash"] == entry_hash(**{k: v for k, v in row.items() if k != "hash"})
    assert stored[0]["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(stored))
    created = [row["created_at"] for row in stored]
    assert created == sorted(created)  # stamped under the lock: time follows the chain
    report = audit_verify_chain()
    assert report.ok and report.checked == len(stored) and report.last_hash == stored[-1]["hash"]


@pytest.mark.django_db
def test_entries_written_before_the_database_hashed_them_still_verify_and_chain_on() -> None:
    # How record() wrote them until now: hashed in Python, inserted through the ORM.
    prev = GENESIS_HASH
    for seq in range(1, 4):
        fields: dict[str, Any] = {
            "seq": seq,
            "created_at": datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=seq, microseconds=seq * 7),
            "actor_user_id": None,
            "actor": "system:old",
            "ip": "10.0.0.1",
            "otp_verified": seq == 2,
            "action": "old.entry",
            "target_type": "thing",
            "target_id": str(seq),
            "data": {"n": seq, "note": 'é\n"q"'},
            "prev_hash": prev,
        }
        prev = AuditEntry.objects.create(hash=entry_hash(**fields), **fields).hash
    new = record(actor="system:test", action="new.entry")
    assert (new.seq, new.prev_hash) == (4, prev)
    report = audit_verify_chain()
    assert report.ok and report.checked == 4


def _tamper(sql: str, params: list[Any]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER USER")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "change",
    [
        "created_at = created_at + interval '1 microsecond'",
        "actor = 'someone else'",
        "actor_user_id = NULL",
        "ip = '10.9.9.9'",
        "ip = NULL",
        "otp_verified = NOT otp_verified",
        "action = 'nothing.happened'",
        "target_type = 'other'",
        "target_id = '8'",
        "data = '{\"amount\": 1.0}'",  # 1 and 1.0 are different entries
        'data = \'{"amount": 1, "extra": null}\'',
        "prev_hash = repeat('1', 64)",
    ],
)
def test_verify_catches_a_change_to_any_stored_field(change: str) -> None:
    user = make_person("tamper-user").user
    via = Via(ip="10.0.0.1", otp_verified=True, user_id=user.pk)
    first = record(actor=user, action="test.tamper", target=("bot", 7), data={"amount": 1}, request=via).seq
    for _ in range(3):
        record(actor=user, action="test.tamper", target=("bot", 7), data={"amount": 1}, request=via)
    _tamper(f"UPDATE audit_auditentry SET {change} WHERE seq = %s", [first + 2])
    report = audit_verify_chain(chunk_size=2)  # the break is on a later page than the first
    assert (report.ok, report.broken_seq, report.checked) == (False, first + 2, first + 1)


@pytest.mark.django_db
def test_verify_reads_page_after_page_and_from_a_known_entry() -> None:
    for i in range(11):
        record(actor="system:test", action="test.page", data={"i": i})
    entries = list(AuditEntry.objects.order_by("seq").values_list("seq", "hash"))
    for chunk in (1, 2, 3, 10, 11, 1000):
        report = audit_verify_chain(chunk_size=chunk)
        assert (report.ok, report.checked, report.last_seq, report.last_hash) == (True, 11, 11, entries[-1][1])
    report = audit_verify_chain(chunk_size=4, after_seq=5, after_hash=entries[4][1])
    assert (report.ok, report.checked, report.last_seq) == (True, 6, 11)
    wrong = audit_verify_chain(chunk_size=4, after_seq=5, after_hash=entries[3][1])
    assert (wrong.ok, wrong.broken_seq) == (False, 6)


@pytest.mark.django_db
def test_a_refused_entry_in_the_callers_transaction_changes_nothing_and_leaves_it_usable() -> None:
    before = record(actor="system:test", action="test.before").seq
    with transaction.atomic():
        with pytest.raises(DatabaseError):
            record(actor="system:test", action="x" * 101)  # longer than the column
        record(actor="system:test", action="test.after")  # the caller's transaction goes on
    with pytest.raises(DatabaseError):
        record(actor="system:test", action="y" * 101)  # on its own, outside any transaction
    assert list(AuditEntry.objects.filter(seq__gte=before).order_by("seq").values_list("seq", "action")) == [
        (before, "test.before"),
        (before + 1, "test.after"),
    ]
    assert audit_verify_chain().ok


@pytest.mark.django_db
def test_an_entry_commits_and_rolls_back_with_the_callers_change() -> None:
    user = make_person("rollback-user").user
    head = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    with pytest.raises(RuntimeError), transaction.atomic():
        user.first_name = "Changed"
        user.save()
        record(actor="system:test", action="test.changed", target=user)
        raise RuntimeError("the change fails after its entry was written")
    user.refresh_from_db()
    assert user.first_name != "Changed" and not AuditEntry.objects.filter(action="test.changed").exists()
    with transaction.atomic():
        user.first_name = "Changed"
        user.save()
        entry = record(actor="system:test", action="test.changed", target=user)
    assert AuditEntry.objects.get(action="test.changed").seq == entry.seq == head + 1
    assert audit_verify_chain().ok


@pytest.mark.django_db
def test_numbers_are_hashed_as_the_database_returns_them() -> None:
    # jsonb prints 1e+300 as 1000...0 and -0.0 as 0.0: hashing the Python float would break the chain.
    numbers = [-0.0, 1e300, -1.5e16, 1.2345e20, 1.5e-07, 5e-324, 0.1, 2.5, 10**30, -7]
    entry = record(actor="system:test", action="test.numbers", data={"n": numbers})
    stored = AuditEntry.objects.get(seq=entry.seq)
    assert (
        stored.data
        == entry.data
        == {"n": [0.0, 10**300, -15 * 10**15, 12345 * 10**16, 1.5e-07, 5e-324, 0.1, 2.5, 10**30, -7]}
    )
    assert stored.hash == entry_hash(
        **{f.attname: getattr(stored, f.attname) for f in AuditEntry._meta.concrete_fields if f.attname != "hash"}
    )
    assert audit_verify_chain().ok


@pytest.mark.django_db
def test_a_database_error_while_reading_is_raised_not_reported_as_a_verdict() -> None:
    for i in range(3):
        record(actor="system:test", action="test.read", data={"i": i})
    # The pages are read by a helper thread (on this connection): its failure must reach the caller.
    with pytest.raises(DatabaseError, match="LIMIT must not be negative"):
        audit_verify_chain(chunk_size=-1)


@pytest.mark.django_db
def test_a_break_on_an_early_page_stops_the_reader() -> None:
    for i in range(40):
        record(actor="system:test", action="test.read", data={"i": i})
    _tamper("UPDATE audit_auditentry SET action = 'forged' WHERE seq = 2", [])
    report = audit_verify_chain(chunk_size=3)
    assert (report.ok, report.broken_seq) == (False, 2)
    assert not [t for t in threading.enumerate() if t.name == "audit-verify-reader"]
    assert AuditEntry.objects.count() == 40  # and the connection is usable at once
