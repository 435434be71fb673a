"""The audit log pages: who may see them, filters, keyset pages, an entry's detail, exports."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext

from apps.audit.chain import GENESIS_HASH, canonical_time, entry_hash
from apps.audit.checkpoints import audit_checkpoint_create, audit_verify
from apps.audit.models import AuditEntry
from apps.audit.selectors import PAGE_SIZE
from apps.vault import client as vault
from tests.people import Person, make_person, password_login

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _append(
    *,
    created_at: datetime,
    actor: str = "system:test",
    action: str = "test.action",
    target: tuple[str, str] = ("", ""),
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """An entry at a chosen time (record() always stamps "now"), chained like record() does."""
    last = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
    fields: dict[str, Any] = {
        "seq": seq,
        "created_at": created_at,
        "actor_user_id": None,
        "actor": actor,
        "ip": None,
        "otp_verified": False,
        "action": action,
        "target_type": target[0],
        "target_id": target[1],
        "data": data or {},
        "prev_hash": prev,
    }
    return AuditEntry.objects.create(hash=entry_hash(**fields), **fields)


@pytest.fixture
def varied() -> list[AuditEntry]:
    """Entries of several actors, actions, targets and times, one a minute from T0."""
    rows = []
    for i in range(40):
        rows.append(
            _append(
                created_at=T0 + timedelta(minutes=i),
                actor="system:control-worker" if i % 4 == 0 else f"user{i % 3}",
                action=["bot.updated", "bot.started", "exchange_account.rotated", "login.succeeded"][i % 4],
                target=("bots.bot", str(i % 5)) if i % 2 == 0 else ("exchange_accounts.account", "a1"),
                data={"before": {"max_order_notional": str(i)}, "after": {"max_order_notional": str(i + 1)}}
                if i % 4 == 0
                else {"note": f"entry number {i}", "marker": "needle" if i in (7, 23) else "hay"},
            )
        )
    return rows


def _streamed(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def _seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'href="/audit/(\d+)/"', html)]


# -- who may see it ---------------------------------------------------------------------------------


def test_anonymous_and_password_only_sessions_are_sent_to_log_in(client: Client) -> None:
    for url in ["/audit/", "/audit/1/", "/audit/export.csv", "/audit/export.json"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), url
    assert client.post("/audit/checkpoint/")["Location"].startswith("/accounts/login/")

    half = Client()
    password_login(half, make_person("pat", "admin"))
    for url in ["/audit/", "/audit/export.csv"]:
        assert half.get(url)["Location"] == "/accounts/otp/", url
    assert half.post("/audit/checkpoint/")["Location"] == "/accounts/otp/"


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_every_role_reads_the_log(logged_in: LoggedIn, role: str) -> None:
    client, _ = logged_in(role)
    page = client.get("/audit/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/audit/"' in html and "Audit log" in html  # in the navigation too
    assert ("Sign a checkpoint now" in html) is (role == "admin")


def test_only_an_admin_can_ask_for_a_checkpoint_and_it_is_queued_and_audited(logged_in: LoggedIn) -> None:
    for role in ("viewer", "operator"):
        client, _ = logged_in(role)
        assert client.post("/audit/checkpoint/").status_code == 403
    assert not AuditEntry.objects.filter(action="audit.checkpoint_requested").exists()

    r: Any = redis.Redis.from_url(settings.REDIS_URL)
    queued_before = r.llen("control")
    client, admin = logged_in("admin")
    response = client.post("/audit/checkpoint/", follow=True)
    assert "Checkpoint requested" in response.content.decode()
    entry = AuditEntry.objects.get(action="audit.checkpoint_requested")
    assert entry.actor == admin.user.username and entry.otp_verified
    # The task waits on the control worker's queue (taken off again: no worker runs here).
    raw = r.lrange("control", 0, -1)
    ours = [m for m in raw if json.loads(m)["headers"]["task"] == "apps.audit.tasks.audit_checkpoint_task"]
    assert len(raw) == queued_before + 1 and len(ours) == 1
    r.lrem("control", 1, ours[0])


# -- filters and pages --------------------------------------------------------------------------------


def test_the_first_page_shows_the_newest_entries_and_pages_go_by_seq(logged_in: LoggedIn) -> None:
    client, _ = logged_in("viewer")
    for i in range(2 * PAGE_SIZE + 7):
        _append(created_at=T0 + timedelta(seconds=i), action="paging.test")
    every = list(AuditEntry.objects.filter(action="paging.test").order_by("-seq").values_list("seq", flat=True))

    seen: list[int] = []
    url = "/audit/?action=paging.test"
    while url:
        html = client.get(url).content.decode()
        page = _seqs(html)
        assert page == sorted(page, reverse=True) and len(page) <= PAGE_SIZE
        seen += page
        older = re.search(r'href="\?([^"]+)" rel="next"', html)
        url = f"/audit/?{older.group(1).replace('&amp;', '&')}" if older else ""
    assert seen == every  # every entry once, in order, in three pages

    # Back from the last page with "Newer".
    html = client.get(f"/audit/?action=paging.test&before={every[2 * PAGE_SIZE - 1]}").content.decode()
    assert _seqs(html) == every[2 * PAGE_SIZE :]
    newer = re.search(r'href="\?([^"]+)" rel="prev"', html)
    assert newer is not None
    html = client.get(f"/audit/?{newer.group(1).replace('&amp;', '&')}").content.decode()
    assert _seqs(html) == every[PAGE_SIZE : 2 * PAGE_SIZE]
    # "Start at #N" shows #N first.
    assert _seqs(client.get(f"/audit/?action=paging.test&start={every[10]}").content.decode())[0] == every[10]


def test_a_page_is_one_keyset_query_without_offset_or_count(logged_in: LoggedIn, varied: list[AuditEntry]) -> None:
    client, _ = logged_in("viewer")
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/audit/?action=bot.updated&before={varied[30].seq}").status_code == 200
    audit_sql = [q["sql"] for q in queries.captured_queries if '"audit_auditentry"' in q["sql"]]
    assert audit_sql and not any("OFFSET" in s or "COUNT(" in s.upper() for s in audit_sql)
    assert any(f'"seq" < {varied[30].seq}' in s and "LIMIT 51" in s for s in audit_sql)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("actor=user1", lambda e: e.actor == "user1"),
        ("action=bot.updated", lambda e: e.action == "bot.updated"),
        ("action=bot.*", lambda e: e.action.startswith("bot.")),
        ("target=bots.bot", lambda e: e.target_type == "bots.bot"),
        ("target=bots.bot:3", lambda e: (e.target_type, e.target_id) == ("bots.bot", "3")),
        (
            "since=2026-03-01T12:10&until=2026-03-01T12:20",
            lambda e: T0 + timedelta(minutes=10) <= e.created_at < T0 + timedelta(minutes=20),
        ),
        ("q=NEEDLE", lambda e: e.data.get("marker") == "needle"),
        ("q=control-worker", lambda e: e.actor == "system:control-worker"),
        (
            "actor=user0&action=exchange_account.rotated&q=number",
            lambda e: e.actor == "user0" and e.action == "exchange_account.rotated",
        ),
    ],
)
def test_filters(logged_in: LoggedIn, varied: list[AuditEntry], query: str, expected: Callable[[Any], bool]) -> None:
    client, _ = logged_in("viewer")
    response = client.get(f"/audit/?{query}")
    assert response.status_code == 200
    want = sorted((e.seq for e in varied if expected(e)), reverse=True)
    assert want, "the case must match something"
    assert _seqs(response.content.decode()) == want


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=yesterday", "Enter a valid date/time."),
        ("since=2026-03-02T00:00&until=2026-03-01T00:00", "Must be later than From."),
        ("q=ab", "Ensure this value has at least 3 characters"),
        ("action=bot%3Bdrop", "Letters, digits and . _ : - only"),
        ("before=-5", "Ensure this value is greater than or equal to 1."),
        ("before=abc", "Enter a whole number."),
        ("before=9&after=3", "Give one position only"),
        ("target=" + "x" * 150, "each at most 100 characters"),
    ],
)
def test_bad_filter_input_is_refused_without_a_query(
    logged_in: LoggedIn, varied: list[AuditEntry], query: str, message: str
) -> None:
    client, _ = logged_in("viewer")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/audit/?{query}")
    assert response.status_code == 400
    assert message in response.content.decode()
    assert _seqs(response.content.decode()) == []
    # Only the banner's look at the newest entry; no filtered query ran.
    assert not [q for q in queries.captured_queries if 'FROM "audit_auditentry" WHERE' in q["sql"]]
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/audit/export.csv?{query}").status_code == 400
    assert not [q for q in queries.captured_queries if 'FROM "audit_auditentry" WHERE' in q["sql"]]
    assert not AuditEntry.objects.filter(action="audit.exported").exists()


# -- an entry's detail ------------------------------------------------------------------------------


def test_the_detail_shows_the_fields_hashes_and_the_before_after_diff(
    logged_in: LoggedIn, control_vault: vault.ProcessVault
) -> None:
    client, _ = logged_in("viewer")
    entry = _append(
        created_at=T0,
        actor="system:test",
        action="bot.updated",
        target=("bots.bot", "7"),
        data={
            "before": {"max_order_notional": "100", "symbols": ["BTC/USDT"], "gone": 1},
            "after": {"max_order_notional": "250", "symbols": ["BTC/USDT"], "new": "<b>x</b>"},
        },
    )
    html = client.get(f"/audit/{entry.seq}/").content.decode()
    assert entry.hash in html and entry.prev_hash in html and "bots.bot:7" in html
    rows = re.findall(r'<tr class="(\w+)"><th scope="row">([^<]+)</th>', html)
    assert rows == [("removed", "gone"), ("changed", "max_order_notional"), ("added", "new"), ("same", "symbols")]
    assert "<code>100</code>" in html and "<code>250</code>" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html  # data is escaped
    assert "not yet covered by a signed checkpoint" in html

    audit_checkpoint_create(source="system:test", process_vault=control_vault)
    assert f"covered by checkpoint #{entry.seq}," in client.get(f"/audit/{entry.seq}/").content.decode()
    assert client.get("/audit/999999/").status_code == 404


def test_plain_data_has_no_diff(logged_in: LoggedIn) -> None:
    client, _ = logged_in("viewer")
    entry = _append(created_at=T0, data={"reason": "suspected key leak"})
    html = client.get(f"/audit/{entry.seq}/").content.decode()
    assert "Changes" not in html and "suspected key leak" in html


# -- the chain state banner -----------------------------------------------------------------------


def test_the_banner_tells_the_chain_state(logged_in: LoggedIn, control_vault: vault.ProcessVault) -> None:
    client, _ = logged_in("viewer")
    assert "has not been verified yet" in client.get("/audit/").content.decode()

    audit_checkpoint_create(source="system:test", process_vault=control_vault)
    report = audit_verify(source="system:test", process_vault=control_vault)
    html = client.get("/audit/").content.decode()
    assert f"Verified up to #{report.last_seq}</strong>" in html and "1 signed checkpoint valid" in html
    assert f"Last signed checkpoint: #{report.last_seq}" in html

    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER USER")
        cursor.execute("UPDATE audit_auditentry SET action = 'x' WHERE seq = 2")
        cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER USER")
    # A checkpoint run finds nothing (the damage is before its anchor)...
    assert audit_checkpoint_create(source="system:test", process_vault=control_vault).report.ok
    assert "Verified up to" in client.get("/audit/").content.decode()
    # ...the next full run does, and from then on the banner says so.
    audit_verify(source="system:test", process_vault=control_vault)
    audit_checkpoint_create(source="system:test", process_vault=control_vault)
    html = client.get("/audit/").content.decode()
    assert "Audit log tampered with: broken at #2" in html and "Verified up to" not in html


# -- exports ----------------------------------------------------------------------------------------


def _expected(query: dict[str, Any]) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(**query).order_by("seq"))


def _record(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "created_at": canonical_time(e.created_at),
        "actor": e.actor,
        "actor_user_id": e.actor_user_id,
        "ip": e.ip,
        "otp_verified": e.otp_verified,
        "action": e.action,
        "target_type": e.target_type,
        "target_id": e.target_id,
        "data": e.data,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


@pytest.mark.parametrize(
    ("query", "orm", "export_matches"),
    [
        ("action=bot.updated&target=bots.bot", {"action": "bot.updated", "target_type": "bots.bot"}, False),
        # The first export's own entry holds the filter "needle", so the second export finds it too.
        ("q=needle", {"data__marker": "needle"}, True),
        (
            "since=2026-03-01T12:05&until=2026-03-01T12:09",
            {"created_at__gte": T0 + timedelta(minutes=5), "created_at__lt": T0 + timedelta(minutes=9)},
            False,
        ),
        ("", {}, True),
    ],
)
def test_exports_hold_exactly_the_filtered_entries(
    logged_in: LoggedIn, varied: list[AuditEntry], query: str, orm: dict[str, Any], export_matches: bool
) -> None:
    client, who = logged_in("viewer")
    want = [_record(e) for e in _expected(orm)]  # taken before the exports add their own entries

    response = client.get(f"/audit/export.json?{query}")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.streaming and "attachment" in response["Content-Disposition"]
    exported = json.loads(_streamed(response))
    assert exported == want

    json_export = AuditEntry.objects.get(action="audit.exported")
    want += [_record(json_export)] if export_matches else []
    response = client.get(f"/audit/export.csv?{query}")
    rows = list(csv.DictReader(io.StringIO(_streamed(response).decode())))
    assert [int(r["seq"]) for r in rows] == [w["seq"] for w in want]
    for row, w in zip(rows, want, strict=True):
        assert json.loads(row["data"]) == w["data"] and row["hash"] == w["hash"] and row["actor"] == w["actor"]

    # Each export is audited with its filters; it covers the log up to the moment it started, not its own entry.
    exports = list(AuditEntry.objects.filter(action="audit.exported").order_by("seq"))
    assert [e.data["format"] for e in exports] == ["json", "csv"]
    assert all(e.actor == who.user.username and e.otp_verified for e in exports)
    if query:
        assert exports[0].data["filters"]
    assert exports[0].data["upto_seq"] < exports[0].seq


def test_an_export_streams_under_asgi_too(logged_in: LoggedIn, varied: list[AuditEntry]) -> None:
    client, _ = logged_in("viewer")
    async_client = AsyncClient()
    async_client.cookies = client.cookies
    want = [e.seq for e in _expected({"action": "bot.started"})]

    async def fetch() -> tuple[bool, bytes]:
        response: Any = await async_client.get("/audit/export.json?action=bot.started")
        assert response.status_code == 200
        return response.is_async, b"".join([chunk async for chunk in response.streaming_content])

    is_async, body = async_to_sync(fetch)()
    assert is_async  # an async iterator: Django streams it instead of reading it all first
    assert [r["seq"] for r in json.loads(body)] == want


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralized(logged_in: LoggedIn) -> None:
    client, _ = logged_in("viewer")
    _append(created_at=T0, action="bot.created", target=("bots.bot", '=HYPERLINK("http://x")'))
    rows = list(csv.DictReader(io.StringIO(_streamed(client.get("/audit/export.csv?action=bot.created")).decode())))
    assert [r["target_id"] for r in rows] == ['\'=HYPERLINK("http://x")']
