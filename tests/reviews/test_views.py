"""The review pages: who may read, export and sign off; bad input; exports equal to the page."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.alerts.services import alert_raise
from apps.audit.models import AuditEntry
from apps.core.exceptions import ApplicationError
from apps.reviews.exports import COLUMNS, sections
from apps.reviews.models import ReviewSignoff
from apps.reviews.periods import day_period
from apps.reviews.selectors import review_build, review_digest
from apps.reviews.services import review_sign_off
from apps.trading.models import GateRefusal
from tests.people import Person, make_person, password_login
from tests.reviews.factories import DAY1, account, bot_on, fill

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]
DAY = DAY1.date().isoformat()
URL = f"/reviews/day/{DAY}/"


@pytest.fixture
def traded() -> None:
    """A live bot's day: a buy and a sell, and a refusal by the gate."""
    bot = bot_on(account(), "review-bot")
    fill(bot, "buy", "1", "100", DAY1, fee="0.1")
    fill(bot, "sell", "1", "120", DAY1 + dt.timedelta(hours=2), fee="0.12")
    GateRefusal.objects.create(
        bot=bot,
        symbol="BTC/USDT",
        side="buy",
        amount=Decimal(5),
        reason="max_order_notional",
        message="too large",
        created_at=DAY1 + dt.timedelta(hours=1),
    )


def digest_on(html: str) -> str:
    found = re.search(r'name="digest" value="([0-9a-f]{64})"', html)
    assert found, "the sign-off form carries the digest"
    return found.group(1)


def _streamed(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else bytes(response.content)


# -- who may do what ---------------------------------------------------------------------------------


def test_anonymous_and_password_only_sessions_are_sent_to_log_in(client: Client) -> None:
    for url in ["/reviews/", URL, f"{URL}export.csv", f"{URL}export.json"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), url
    for url in [f"{URL}signoff/", f"{URL}balances/"]:
        assert client.post(url)["Location"].startswith("/accounts/login/"), url
    half = Client()
    password_login(half, make_person("pat", "operator"))
    assert half.get(URL)["Location"] == "/accounts/otp/"
    assert half.post(f"{URL}signoff/", {"digest": "0" * 64})["Location"] == "/accounts/otp/"
    assert not ReviewSignoff.objects.exists()


def test_a_viewer_reads_and_exports_but_cannot_sign_off_or_ask_for_balances(logged_in: LoggedIn, traded: None) -> None:
    client, _ = logged_in("viewer")
    listing = client.get("/reviews/").content.decode()
    assert f'href="/reviews/day/{timezone.now().date().isoformat()}/"' in listing
    page = client.get(URL)
    html = page.content.decode()
    assert page.status_code == 200 and "review-bot" in html and "Order too large" in html
    assert 'href="/reviews/"' in html and ">Reviews<" in html  # in the navigation
    assert "Mark review done" not in html and "Check balances now" not in html
    digest = review_digest(review_build(day_period(DAY1.date())))
    assert client.post(f"{URL}signoff/", {"digest": digest}).status_code == 403
    assert client.post(f"{URL}balances/").status_code == 403
    assert not ReviewSignoff.objects.exists()
    assert not AuditEntry.objects.filter(action__in=["review.signed_off", "review.balance_check_requested"]).exists()
    assert client.get(f"{URL}export.csv").status_code == 200


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_a_reviewer_marks_a_review_done_for_what_the_page_showed_and_it_is_audited(
    logged_in: LoggedIn, traded: None, role: str
) -> None:
    client, who = logged_in(role)
    digest = digest_on(client.get(URL).content.decode())
    assert digest == review_digest(review_build(day_period(DAY1.date())))
    response = client.post(f"{URL}signoff/", {"digest": digest, "note": "Checked both fills."}, follow=True)
    html = response.content.decode()
    assert "marked done" in html and f"by {who.user.username}" in html and "Nothing has changed since" in html
    signoff = ReviewSignoff.objects.get()
    assert (signoff.period_kind, signoff.period, signoff.signed_by, signoff.digest, signoff.note) == (
        "day",
        DAY,
        who.user,
        digest,
        "Checked both fills.",
    )
    entry = AuditEntry.objects.get(action="review.signed_off")
    assert entry.seq == signoff.audit_seq and entry.actor_user == who.user and entry.otp_verified
    assert (entry.target_type, entry.target_id) == ("reviews.review", f"day:{DAY}")
    assert entry.data == {"kind": "day", "period": DAY, "digest": digest, "note": "Checked both fills."}


def test_signing_the_same_unchanged_review_twice_is_refused_but_a_changed_one_can_be_signed_again(
    logged_in: LoggedIn, traded: None
) -> None:
    client, who = logged_in("operator")
    digest = digest_on(client.get(URL).content.decode())
    client.post(f"{URL}signoff/", {"digest": digest})
    again = client.post(f"{URL}signoff/", {"digest": digest}, follow=True).content.decode()
    assert "already marked this review done" in again
    assert ReviewSignoff.objects.count() == 1 and AuditEntry.objects.filter(action="review.signed_off").count() == 1

    # A late event of that day: the signed review no longer matches; the page says so.
    late = alert_raise(kind="deadman_failing", message="late news")
    type(late).objects.filter(pk=late.pk).update(created_at=DAY1 + dt.timedelta(hours=5))
    html = client.get(URL).content.decode()
    assert "Changed since it was reviewed" in html and "changed since" in html
    new_digest = digest_on(html)
    assert new_digest != digest
    client.post(f"{URL}signoff/", {"digest": new_digest, "note": "Seen the late alert."})
    assert [s.digest for s in ReviewSignoff.objects.all()] == [new_digest, digest]
    assert "Nothing has changed since" in client.get(URL).content.decode()
    # Another reviewer may add a sign-off of the same data.
    other, _ = logged_in("admin")
    other.post(f"{URL}signoff/", {"digest": new_digest})
    assert ReviewSignoff.objects.count() == 3
    assert who.user != ReviewSignoff.objects.first().signed_by  # type: ignore[union-attr]


def test_a_review_that_changed_after_the_page_was_shown_is_not_signed(logged_in: LoggedIn, traded: None) -> None:
    client, _ = logged_in("operator")
    shown = digest_on(client.get(URL).content.decode())
    bot = bot_on(account("second"), "late-bot")
    fill(bot, "buy", "1", "100", DAY1 + dt.timedelta(hours=6))  # synced while the reviewer was reading
    html = client.post(f"{URL}signoff/", {"digest": shown}, follow=True).content.decode()
    assert "changed after the page was shown" in html
    assert not ReviewSignoff.objects.exists() and not AuditEntry.objects.filter(action="review.signed_off").exists()


def test_a_signoff_that_no_longer_matches_its_audit_entry_is_shown_as_such(logged_in: LoggedIn, traded: None) -> None:
    client, _ = logged_in("operator")
    client.post(f"{URL}signoff/", {"digest": digest_on(client.get(URL).content.decode()), "note": "ok"})
    ReviewSignoff.objects.update(note="everything was fine, honestly")  # someone edits the row in the database
    assert "does not match this sign-off" in client.get(URL).content.decode()


def test_the_list_shows_each_recent_periods_status(logged_in: LoggedIn) -> None:
    client, who = logged_in("operator")
    today = f"/reviews/day/{timezone.now().date().isoformat()}/"
    client.post(f"{today}signoff/", {"digest": digest_on(client.get(today).content.decode())})
    html = client.get("/reviews/").content.decode()
    row = re.search(rf'<tr><td><a href="{today}">.*?</tr>', html, re.S)
    assert row and f"by {who.user.username}" in row.group(0)
    yesterday = (timezone.now().date() - dt.timedelta(days=1)).isoformat()
    row = re.search(rf'<tr><td><a href="/reviews/day/{yesterday}/">.*?</tr>', html, re.S)
    assert row and "not reviewed" in row.group(0)


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/reviews/day/2026-13-01/", "not a real day"),
        ("/reviews/day/20260301/", "YYYY-MM-DD"),
        ("/reviews/week/2026-03/", "a day or a month"),
        ("/reviews/month/2026-3/", "YYYY-MM"),
        ("/reviews/?period=yesterday", "YYYY-MM"),
        ("/reviews/day/2026-02-30/export.json", "not a real day"),
    ],
)
def test_a_bad_period_is_a_400_with_a_clear_message(logged_in: LoggedIn, url: str, message: str) -> None:
    client, _ = logged_in("viewer")
    response = client.get(url)
    assert response.status_code == 400 and message in response.content.decode()
    assert not AuditEntry.objects.filter(action="review.exported").exists()


def test_a_typed_period_opens_its_review(logged_in: LoggedIn) -> None:
    client, _ = logged_in("viewer")
    assert client.get("/reviews/?period=2026-02")["Location"] == "/reviews/month/2026-02/"
    assert client.get(f"/reviews/?period={DAY}")["Location"] == URL


def test_bad_sign_off_input_changes_nothing(logged_in: LoggedIn, traded: None) -> None:
    client, _ = logged_in("operator")
    digest = digest_on(client.get(URL).content.decode())
    for data, status, text in [
        ({}, 400, "lost the review&#x27;s digest"),
        ({"digest": "not-a-digest"}, 400, "malformed"),
        ({"digest": digest, "note": "x" * 2001}, 400, "at most 2000 characters"),
        ({"digest": "0" * 64}, 302, ""),  # well-formed, but not this review's: refused as "changed"
    ]:
        response = client.post(f"{URL}signoff/", data)
        assert response.status_code == status and text in response.content.decode(), data
    assert client.post("/reviews/day/2999-01-01/signoff/", {"digest": digest}).status_code == 404
    assert client.post("/reviews/day/2026-02-30/balances/").status_code == 400
    assert not ReviewSignoff.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="review.").exclude(action="review.exported").exists()


# -- exports -------------------------------------------------------------------------------------------


def test_the_json_export_is_the_page_data_with_its_digest_and_is_audited(logged_in: LoggedIn, traded: None) -> None:
    client, who = logged_in("viewer")
    page = client.get(URL)
    data, digest = page.context["data"], page.context["digest"]
    response = client.get(f"{URL}export.json")
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="review-day-{DAY}.json"'
    document = json.loads(_streamed(response))
    assert document["review"] == data and document["digest"] == digest == review_digest(document["review"])
    assert document["review"]["trades"][0]["realized_pnl"] == "19.78"  # 120 - 0.12 - 100.1
    entry = AuditEntry.objects.get(action="review.exported")
    assert entry.actor_user == who.user and entry.data == {
        "kind": "day",
        "period": DAY,
        "format": "json",
        "digest": digest,
    }


def test_the_csv_export_has_every_section_row_for_row(logged_in: LoggedIn, traded: None) -> None:
    client, _ = logged_in("viewer")
    data = client.get(URL).context["data"]
    rows = list(csv.reader(io.StringIO(_streamed(client.get(f"{URL}export.csv")).decode())))
    assert rows[1][:3] == ["review", "day", DAY] and rows[1][5] == review_digest(data)
    by_section: dict[str, list[list[str]]] = {}
    for row in rows[2:]:
        if row:
            by_section.setdefault(row[0], []).append(row[1:])
    for name, section_rows in sections(data):
        header, *body = by_section[name]
        assert tuple(header) == COLUMNS[name]
        as_text = [["" if r[c] is None else str(r[c]) for c in COLUMNS[name]] for r in section_rows]
        assert body == as_text, name
    assert by_section["trades"][1][COLUMNS["trades"].index("realized_pnl")] == "19.78"
    assert AuditEntry.objects.filter(action="review.exported", data__format="csv").count() == 1


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(logged_in: LoggedIn) -> None:
    alert_raise(kind="custom_note", message='=HYPERLINK("http://evil.example")')
    client, _ = logged_in("viewer")
    text = _streamed(client.get(f"/reviews/day/{timezone.now().date().isoformat()}/export.csv")).decode()
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


# -- balances and the audit log ------------------------------------------------------------------------


def test_an_operator_asks_for_a_balance_check_which_is_queued_for_the_control_worker_and_audited(
    logged_in: LoggedIn,
) -> None:
    r: Any = redis.Redis.from_url(settings.REDIS_URL)
    client, who = logged_in("operator")
    response = client.post(f"{URL}balances/", follow=True)
    assert "Balance check requested" in response.content.decode()
    entry = AuditEntry.objects.get(action="review.balance_check_requested")
    assert entry.actor_user == who.user and entry.target_id == f"day:{DAY}"
    queued = [
        m
        for m in r.lrange("control", 0, -1)
        if json.loads(m)["headers"]["task"] == "apps.reviews.tasks.balance_snapshot_task"
    ]
    assert len(queued) == 1
    assert json.loads(queued[0])["headers"]["kwargsrepr"] == "{'source': 'request'}"  # ids only, never a secret
    r.lrem("control", 1, queued[0])


def test_each_section_links_to_the_audit_log_filtered_for_the_period(logged_in: LoggedIn, traded: None) -> None:
    client, _ = logged_in("viewer")
    html = client.get(URL).content.decode()
    since, until = f"since={DAY}T00%3A00", f"until={(DAY1.date() + dt.timedelta(days=1)).isoformat()}T00%3A00"
    links = [link.replace("&amp;", "&") for link in re.findall(r'href="(/audit/\?[^"]+)"', html)]
    gate = next(link for link in links if "action=gate.refused" in link)
    assert since in gate and until in gate
    # The audit page accepts every one of them (its parameter names and formats).
    for link in links:
        assert client.get(link).status_code == 200, link
    assert f"target=reviews.review%3Aday%3A{DAY}" in html


@pytest.mark.django_db(transaction=True)
def test_a_double_submitted_sign_off_signs_once() -> None:
    reviewer = make_person("rita", "operator").user
    period = day_period(DAY1.date())
    digest = review_digest(review_build(period))
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def submit() -> None:
        try:
            barrier.wait()
            review_sign_off(actor=reviewer, period=period, seen_digest=digest)
            outcomes.append("signed")
        except ApplicationError as exc:
            outcomes.append(exc.message)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == sorted(
        ["signed", "You have already marked this review done, and nothing has changed since."]
    )
    assert ReviewSignoff.objects.count() == 1 and AuditEntry.objects.filter(action="review.signed_off").count() == 1
