"""Audit log throughput: appends per second with 1 and 4 writers; verification speed.

Every figure is the median of ROUNDS runs and stands next to a floor measured in the same run on
the same machine (whatever else it is doing), as a ratio:
  - appends: the same writers doing bare INSERTs into a plain table, each its own transaction
    (the commit's WAL flush included), i.e. what PostgreSQL gives without any chain;
  - verification: a bare SHA-256 over the very bytes the verifier hashes (no database, no
    encoding), and a bare fetch of the same rows (the database and driver, nothing else).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection, connections

from apps.audit.chain import GENESIS_HASH, EntryText
from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify_chain, record
from apps.audit.verify import _ENTRY_PAGE_SQL

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]
ROUNDS = 5
FLOOR_TABLE = "bench_plain_insert"


def _per_second(writers: int, per_writer: int, append: Callable[[int, int], None]) -> float:
    """All writers together, each in its own thread and database connection, started at once."""
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_writer):
                append(n, i)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert errors == []
    return writers * per_writer / elapsed


def _audit_append(n: int, i: int) -> None:
    record(actor="system:bench", action="bench.append", target=("writer", n), data={"i": i})


def _bare_insert(n: int, i: int) -> None:
    with connection.cursor() as cursor:  # autocommit: each INSERT its own transaction, like each record() above
        cursor.execute(
            f"INSERT INTO {FLOOR_TABLE} (writer, i, data) VALUES (%s, %s, %s::jsonb)",
            [n, i, json.dumps({"i": i})],
        )


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f} of the floor"


def test_bench_audit_appends(bench_report: Report) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {FLOOR_TABLE} (id bigserial PRIMARY KEY, writer int, i int, data jsonb)")
    try:
        runs: dict[str, list[float]] = {"audit 1": [], "floor 1": [], "audit 4": [], "floor 4": []}
        for _ in range(ROUNDS):  # interleaved, so that a busy moment of the machine hits both alike
            runs["floor 1"].append(_per_second(1, 400, _bare_insert))
            runs["audit 1"].append(_per_second(1, 400, _audit_append))
            runs["floor 4"].append(_per_second(4, 200, _bare_insert))
            runs["audit 4"].append(_per_second(4, 200, _audit_append))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {FLOOR_TABLE}")
    total = ROUNDS * (400 + 4 * 200)
    report = audit_verify_chain()
    assert report.ok and report.checked == total == AuditEntry.objects.count()
    median = {key: statistics.median(values) for key, values in runs.items()}
    bench_report(
        f"audit appends, median of {ROUNDS} (each its own transaction; floor: bare INSERTs into a plain table)",
        {
            "1 writer": f"{median['audit 1']:,.0f} appends/s   floor {median['floor 1']:,.0f}/s   "
            f"{_ratio(median['audit 1'], median['floor 1'])}",
            "4 writers": f"{median['audit 4']:,.0f} appends/s   floor {median['floor 4']:,.0f}/s   "
            f"{_ratio(median['audit 4'], median['floor 4'])}  (all writers together)",
        },
    )


def _entries(n: int) -> Iterator[tuple[tuple[Any, ...], bytes]]:
    """(row, the bytes its hash covers) for n chained entries."""
    prev, t0 = GENESIS_HASH, datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(1, n + 1):
        created_at = t0 + timedelta(milliseconds=seq, microseconds=seq % 1000)
        data = {"i": seq, "note": "x" * 40, "bot": {"id": seq % 50, "symbol": "BTC/USDT"}}
        text = EntryText.of(
            actor_user_id=None,
            actor="system:bench",
            ip="127.0.0.1",
            otp_verified=False,
            action="bench.verify",
            target_type="bot",
            target_id=str(seq % 50),
            data=data,
        )
        encoded = (
            f'{text.head}{created_at.isoformat(timespec="microseconds")}{text.middle}{prev}","seq":{seq}{text.tail}'
        )
        entry = hashlib.sha256(encoded.encode()).hexdigest()
        row = (seq, created_at, None, "system:bench", "127.0.0.1", False, "bench.verify", "bot", str(seq % 50))
        yield (*row, json.dumps(data), prev, entry), encoded.encode()
        prev = entry


def test_bench_audit_verify_100k(bench_report: Report) -> None:
    n = 100_000
    columns = "seq, created_at, actor_user_id, actor, ip, otp_verified, action, target_type, target_id, data, "
    hashed: list[bytes] = []
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY audit_auditentry ({columns}prev_hash, hash) FROM STDIN") as copy,
    ):
        for row, encoded in _entries(n):
            copy.write_row(row)
            hashed.append(encoded)
    with connection.cursor() as cursor:
        # A log loaded in one go has no planner statistics yet (a growing one gets them from autovacuum): without
        # them PostgreSQL sorted each page on disk, and this measured the missing ANALYZE, not the verifier.
        cursor.execute("ANALYZE audit_auditentry")

    runs: dict[str, list[float]] = {"verify": [], "sha256": [], "fetch": []}
    for _ in range(ROUNDS):
        start = time.perf_counter()
        report = audit_verify_chain()
        runs["verify"].append(time.perf_counter() - start)
        assert report.ok and report.checked == n

        start = time.perf_counter()
        for encoded in hashed:
            hashlib.sha256(encoded).hexdigest()
        runs["sha256"].append(time.perf_counter() - start)

        start = time.perf_counter()
        with connection.cursor() as cursor:  # the verifier's own query, one page after the other
            for after in range(0, n, 20_000):
                cursor.execute(_ENTRY_PAGE_SQL, [after, n, 20_000])
                assert len(cursor.fetchall()) == 20_000
        runs["fetch"].append(time.perf_counter() - start)
    rate = {key: n / statistics.median(values) for key, values in runs.items()}
    verify = rate["verify"]
    bench_report(
        f"audit_verify over {n:,} entries, median of {ROUNDS}",
        {
            "verify": f"{verify:,.0f} entries/s  ({statistics.median(runs['verify']):.2f} s)",
            "floor: bare sha256": f"{rate['sha256']:,.0f} entries/s   verify is {_ratio(verify, rate['sha256'])}",
            "floor: bare fetch": f"{rate['fetch']:,.0f} entries/s   verify is {_ratio(verify, rate['fetch'])}",
        },
    )
