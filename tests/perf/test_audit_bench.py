"""Audit log throughput: appends per second with 1 and 4 writers; verification speed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from apps.audit.chain import GENESIS_HASH, entry_hash
from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify_chain, record

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]


def _appends_per_second(writers: int, per_writer: int) -> float:
    barrier = threading.Barrier(writers + 1)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(per_writer):
            record(actor="system:bench", action="bench.append", target=("writer", n), data={"i": i})
        connections.close_all()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return writers * per_writer / (time.perf_counter() - start)


def test_bench_audit_appends(bench_report: Report) -> None:
    one = _appends_per_second(1, 2000)
    four = _appends_per_second(4, 500)
    assert audit_verify_chain().checked == 4000
    bench_report(
        "audit appends (each its own transaction, advisory lock, PostgreSQL 18 embedded)",
        {"1 writer": f"{one:,.0f} appends/s", "4 writers": f"{four:,.0f} appends/s (all writers together)"},
    )


def test_bench_audit_verify_100k(bench_report: Report) -> None:
    n = 100_000
    rows, prev, t0 = [], GENESIS_HASH, timezone.now()
    for seq in range(1, n + 1):
        fields: dict[str, Any] = {
            "seq": seq,
            "created_at": t0 + timedelta(microseconds=seq),
            "actor_user_id": None,
            "actor": "system:bench",
            "ip": "127.0.0.1",
            "otp_verified": False,
            "action": "bench.verify",
            "target_type": "bot",
            "target_id": str(seq % 50),
            "data": {"i": seq, "note": "x" * 40},
            "prev_hash": prev,
        }
        prev = entry_hash(**fields)
        rows.append(AuditEntry(hash=prev, **fields))
    AuditEntry.objects.bulk_create(rows, batch_size=5000)

    start = time.perf_counter()
    report = audit_verify_chain()
    elapsed = time.perf_counter() - start
    assert report.ok and report.checked == n
    bench_report(
        "audit_verify over 100,000 entries",
        {"elapsed": f"{elapsed:.2f} s", "rate": f"{n / elapsed:,.0f} entries/s"},
    )
