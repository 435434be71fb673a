"""Alerts in a real browser: the main menu counts the unacknowledged ones; an operator acknowledges one with a
note and the count drops; a bad note is refused on the page and changes nothing."""

from __future__ import annotations

from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.models import AuditEntry
from tests.e2e.conftest import browser_login
from tests.people import make_person


def test_an_operator_acknowledges_an_alert_with_a_note_and_the_menu_count_drops(
    live_server: LiveServer, page: Page
) -> None:
    base = live_server.url
    breaker = alert_raise(
        kind="breaker_tripped",
        message="Breaker tripped on Grid one: drawdown 12% from its peak",
        severity=Alert.Severity.CRITICAL,
        mail=False,
    )
    alert_raise(kind="bot_halted", message="Grid two halted by the order gate: daily loss 210 USDT", mail=False)
    alert_raise(kind="key_check_failed", message="Key of Main account can withdraw", mail=False)  # admins only
    olga = make_person("olga", "operator")
    browser_login(page, base, "olga", olga.code())
    expect(page.locator("h1")).to_have_text("Dashboard")

    nav = page.get_by_role("navigation", name="Main")
    expect(nav.locator("#nav-alerts-count")).to_have_text("(2 unacknowledged)")
    nav.get_by_role("link", name="Alerts").click()
    expect(page.locator("h1")).to_have_text("Alerts")
    expect(page.locator("tbody tr.unacked")).to_have_count(2)
    expect(page.get_by_role("button", name="Acknowledge all 2 shown")).to_be_visible()

    row = page.locator(f"#alert-{breaker.pk}")
    row.get_by_label(f"Note on alert #{breaker.pk}").fill("bell\x07")
    row.get_by_role("button", name="Acknowledge", exact=True).click()
    expect(page.locator(f"#alert-{breaker.pk} [role=alert]")).to_contain_text("control or text-direction character")
    expect(nav.locator("#nav-alerts-count")).to_have_text("(2 unacknowledged)")

    row = page.locator(f"#alert-{breaker.pk}")
    row.get_by_label(f"Note on alert #{breaker.pk}").fill("Drawdown expected after the news; watching it")
    row.get_by_role("button", name="Acknowledge", exact=True).click()
    expect(page.locator(".messages")).to_contain_text(f"Alert #{breaker.pk} acknowledged.")
    expect(page.locator("#nav-alerts-count")).to_have_text("(1 unacknowledged)")
    acked = page.locator(f"#alert-{breaker.pk}")
    expect(acked).to_have_class("acked")
    expect(acked).to_contain_text("by olga")
    expect(acked).to_contain_text("Drawdown expected after the news; watching it")
    # Unacknowledged first: the breaker alert went below the one still open.
    expect(page.locator("tbody tr").first).to_contain_text("Grid two halted")

    breaker.refresh_from_db()
    assert breaker.acknowledged_by == olga.user and breaker.ack_note.startswith("Drawdown expected")
    entry = AuditEntry.objects.get(action="alert.acknowledged")
    assert entry.actor_user == olga.user and entry.target_id == str(breaker.pk)

    page.get_by_role("button", name="Acknowledge all 1 shown").click()
    expect(page.locator(".messages")).to_contain_text("1 alert acknowledged.")
    expect(page.locator("#nav-alerts-count")).to_have_count(0)
    expect(page.locator("tbody tr.unacked")).to_have_count(0)
    # The security alert is for admins: an operator neither sees nor acknowledges it.
    assert Alert.objects.get(kind="key_check_failed").acknowledged_at is None
