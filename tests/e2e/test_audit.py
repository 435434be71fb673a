"""The audit log in a real browser: a viewer filters it and opens an entry's before/after diff."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.audit.models import AuditEntry
from apps.audit.services import record
from tests.e2e.conftest import browser_login
from tests.people import make_person


def test_a_viewer_filters_the_log_and_opens_an_entrys_diff(live_server: LiveServer, page: Page) -> None:
    base = live_server.url
    for i in range(5):
        record(actor="system:test", action="bot.started", target=("bots.bot", i))
    record(
        actor="system:test",
        action="bot.updated",
        target=("bots.bot", 3),
        data={"before": {"max_order_notional": "100"}, "after": {"max_order_notional": "250"}},
    )
    updated = AuditEntry.objects.get(action="bot.updated")
    vera = make_person("vera", "viewer")
    browser_login(page, base, "vera", vera.code())

    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("h1")).to_have_text("Audit log")
    expect(page.locator("tbody tr", has_text="bot.started")).to_have_count(5)

    page.get_by_label("Action").fill("bot.updated")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]action=bot.updated"))
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("bots.bot:3")

    page.get_by_role("link", name=f"#{updated.seq}", exact=True).click()
    expect(page.locator("h1")).to_have_text(f"Audit entry #{updated.seq}")
    expect(page.locator("dd", has_text=updated.hash)).to_be_visible()
    change = page.locator("table.diff tr", has_text="max_order_notional")
    expect(change).to_contain_text("100")
    expect(change).to_contain_text("250")
    expect(change).to_contain_text("changed")

    # A bad filter is explained, not run.
    page.goto(f"{base}/audit/?q=ab")
    expect(page.locator("[role=alert]").first).to_contain_text("at least 3 characters")
