"""Audit log pages at 1,000,000 entries: the first page, deep pages, filtered pages, an export.

Each page figure is the median of 7 runs after a warm-up: the full request through the test
client (middleware, session, OTP check, the chain-state banner, the template), and the
selector's keyset queries alone (the page and its "newer" probe).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.http import QueryDict
from django.test import Client

from apps.audit.chain import GENESIS_HASH, entry_hash
from apps.audit.forms import AuditFilterForm
from apps.audit.selectors import audit_page
from tests.people import Person

pytestmark = [pytest.mark.bench, pytest.mark.django_db]
Report = Callable[[str, dict[str, str]], None]
N = int(os.environ.get("AUDIT_BENCH_ENTRIES", "1000000"))  # smaller only to try the bench out
T0 = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=30)  # a year of a busy console
COLUMNS = (
    "seq",
    "created_at",
    "actor_user_id",
    "actor",
    "ip",
    "otp_verified",
    "action",
    "target_type",
    "target_id",
    "data",
    "prev_hash",
    "hash",
)
# (action, weight): the common ones dominate, some happen a handful of times a year.
ACTIONS = [
    ("login.success", 150),
    ("bot.started", 120),
    ("bot.stopped", 120),
    ("bot.updated", 100),
    ("trading.order_refused", 200),
    ("alert.key_check_failed", 40),
    ("auth.step_up", 60),
    ("user.role_changed", 5),
    ("exchange_account.rotated", 3),
    ("alert.audit_tampered", 0.01),
    ("killswitch.pressed", 0.02),
    ("audit.exported", 2),
    ("bot.created", 10),
    ("otp.enrolled", 1),
]
PERSON_ACTIONS = frozenset(
    {
        "login.success",
        "auth.step_up",
        "bot.updated",
        "bot.created",
        "otp.enrolled",
        "user.role_changed",
        "exchange_account.rotated",
        "killswitch.pressed",
        "audit.exported",
    }
)
USERS = [f"user{i:02d}" for i in range(20)]
SYSTEMS = ["system:control-worker", "system:fleet", "system:beat"]


def _entries(n: int) -> Any:
    rng = random.Random(8)  # noqa: S311 - reproducible test data, not a secret
    names, weights = zip(*ACTIONS, strict=True)
    actions = rng.choices(names, weights=weights, k=n)
    prev = GENESIS_HASH
    for seq in range(1, n + 1):
        action = actions[seq - 1]
        person = action in PERSON_ACTIONS
        actor = rng.choice(USERS) if person else rng.choice(SYSTEMS)
        bot = rng.randint(1, 200)
        if action.startswith("bot."):
            target: tuple[str, str] = ("bots.bot", str(bot))
        elif action in ("login.success", "auth.step_up", "otp.enrolled", "user.role_changed"):
            target = ("accounts.user", str(rng.randint(1, 20)))
        else:
            target = ("exchanges.exchangeaccount", f"0000000{rng.randint(1, 9)}-acct")
        if action == "bot.updated":
            old = rng.randint(10, 500)
            data: dict[str, Any] = {
                "before": {"max_order_notional": str(old)},
                "after": {"max_order_notional": str(old + 10)},
            }
        elif action == "killswitch.pressed":
            data = {"scope": "all", "reason": "suspected key leak", "via": "web"}
        elif action == "trading.order_refused":
            data = {"bot": bot, "symbol": "BTC/USDT", "why": "max notional", "notional": str(rng.randint(1, 9999))}
        else:
            data = {"note": "routine", "n": seq % 97}
        fields: dict[str, Any] = {
            "seq": seq,
            "created_at": T0 + STEP * seq,
            "actor_user_id": None,
            "actor": actor,
            "ip": "10.0.0.1" if person else None,
            "otp_verified": person,
            "action": action,
            "target_type": target[0],
            "target_id": target[1],
            "data": data,
            "prev_hash": prev,
        }
        prev = entry_hash(**fields)
        yield (*(fields[c] if c != "data" else json.dumps(data) for c in COLUMNS[:-1]), prev)


def _load(n: int) -> dict[str, str]:
    start = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, for COPY
        # One GIN build after the load is far faster than a million incremental inserts into it.
        cursor.execute("DROP INDEX audit_entry_search_trgm")
        with raw.copy(f"COPY audit_auditentry ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in _entries(n):
                copy.write_row(row)
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # run the deferred FK checks: CREATE INDEX wants none pending
        loaded = time.perf_counter()
        cursor.execute(
            "CREATE INDEX audit_entry_search_trgm ON audit_auditentry USING gin (lower(action || ' ' || actor || ' ' "
            "|| target_type || ' ' || target_id || ' ' || data::text) gin_trgm_ops)"
        )
        indexed = time.perf_counter()
        cursor.execute("ANALYZE audit_auditentry")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('audit_auditentry'))")
        size = cursor.fetchone()[0]
    return {
        "load (hash + COPY)": f"{loaded - start:.1f} s",
        "trigram index build": f"{indexed - loaded:.1f} s",
        "table + indexes": size,
    }


def _median_ms(client: Client, url: str, runs: int = 7) -> tuple[float, float, int]:
    """(page ms, query ms, rows): the whole request, and the selector's page query alone."""
    response = client.get(url)  # warm-up (and the correctness check below)
    assert response.status_code == 200, url
    rows = response.content.decode().count('<td><a href="/audit/')
    form = AuditFilterForm(QueryDict(url.partition("?")[2]))
    assert form.is_valid(), form.errors
    before, after = form.cursor()
    pages, queries = [], []
    for _ in range(runs):
        start = time.perf_counter()
        client.get(url)
        pages.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        audit_page(form.filters(), before=before, after=after)
        queries.append((time.perf_counter() - start) * 1000)
    return statistics.median(pages), statistics.median(queries), rows


def test_bench_audit_pages_at_a_million(
    logged_in: Callable[[str], tuple[Client, Person]], bench_report: Report
) -> None:
    setup = _load(N)
    client, _ = logged_in("viewer")
    middle = (T0 + STEP * (N // 2)).strftime("%Y-%m-%dT%H:%M")
    end_of_day = (T0 + STEP * (N // 2) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    pages = {
        "first page": "/audit/",
        "deep page (#500,000)": "/audit/?before=500000",
        "deepest page (#1,000)": "/audit/?before=1000",
        "action (10% of entries)": "/audit/?action=bot.updated",
        "action (rare: ~20 entries)": "/audit/?action=killswitch.pressed",
        "action prefix bot.*, deep": "/audit/?action=bot.*&before=300000",
        "actor": "/audit/?actor=user07",
        "target bots.bot:42": "/audit/?target=bots.bot:42",
        "one day (time range)": f"/audit/?since={middle}&until={end_of_day}",
        "text, common (max_order_notional)": "/audit/?q=max_order_notional",
        "text, rare (key leak)": "/audit/?q=key+leak",
        "text, absent (no match)": "/audit/?q=zebra-crossing",
        "actor + action + text": "/audit/?actor=user03&action=bot.updated&q=before",
    }
    figures = dict(setup)
    for name, url in pages.items():
        page_ms, query_ms, rows = _median_ms(client, url)
        assert rows > 0 or "absent" in name or N < 1_000_000, name  # rare kinds need the full million
        figures[name] = f"page {page_ms:6.1f} ms, its queries {query_ms:5.1f} ms  ({rows} rows)"

    start = time.perf_counter()
    response: Any = client.get("/audit/export.csv?action=bot.updated")
    body = b"".join(response.streaming_content)
    elapsed = time.perf_counter() - start
    exported = body.count(b"\n") - 1
    figures["CSV export of action=bot.updated"] = (
        f"{elapsed:.1f} s for {exported:,} entries ({exported / elapsed:,.0f}/s)"
    )
    bench_report(f"audit pages at {N:,} entries (median of 7, full request)", figures)
