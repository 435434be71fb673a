"""The daily review in a real browser: an operator opens today's review, sees a trade and the balance
check against the exchange, and marks it done."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.utils import timezone
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.reviews.models import ReviewSignoff
from apps.reviews.services import balance_snapshots_take
from apps.strategies.base import OrderIntent
from apps.trading.gate import place_order
from apps.trading.sync import orders_sync
from apps.vault import client as vault
from tests.e2e.conftest import browser_login
from tests.people import make_person
from tests.trading.conftest import SYMBOL, Live, live, make_bot, price  # noqa: F401


def test_an_operator_reviews_today_and_marks_it_done(
    live_server: LiveServer,
    page: Page,
    live: Live,  # noqa: F811
    make_bot: Callable[..., Bot],  # noqa: F811
    control_vault: vault.ProcessVault,
    sandbox: Any,
) -> None:
    base = live_server.url
    balance_snapshots_take(source="schedule", process_vault=control_vault)  # the morning's snapshot
    bot = make_bot(name="review-grid")
    place_order(
        bot=bot,
        intent=OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), Decimal("59000"), "e2e-b"),
        exchange=live.exchange,
    )
    sandbox.admin.set_price(SYMBOL, "58900", hold=True)  # the resting buy fills on the exchange
    assert orders_sync(bot=bot, exchange=live.exchange).new_fills == 1
    balance_snapshots_take(source="request", process_vault=control_vault)  # "Check balances now", as the worker does
    olga = make_person("olga", "operator")
    browser_login(page, base, "olga", olga.code())

    page.get_by_role("link", name="Reviews", exact=True).click()
    expect(page.locator("h1")).to_have_text("Reviews")
    today = timezone.now().date().isoformat()
    page.get_by_role("link", name=today, exact=True).click()
    expect(page.locator("h1")).to_contain_text("Review of")
    expect(page.locator("#status")).to_contain_text("Not reviewed yet.")

    trade = page.locator("tr.trade", has_text="review-grid")
    expect(trade).to_contain_text("live")
    expect(trade).to_contain_text("0.01 BTC")
    expect(trade).to_contain_text("590 USDT")
    check = page.get_by_role("region", name=f"Balance check of {live.account.label}")
    expect(check).to_contain_text("adds up")
    expect(check.locator("tr", has_text="USDT")).to_contain_text("9410")  # 10000 - 590, as the exchange says

    page.get_by_label("Note").fill("Grid bought one level; balances add up.")
    page.get_by_role("button", name="Mark review done").click()
    expect(page.locator(".messages")).to_contain_text("marked done")
    expect(page.locator("#status")).to_contain_text("Reviewed by olga")
    expect(page.locator("#status")).to_contain_text("Nothing has changed since.")
    signoff = ReviewSignoff.objects.get()
    assert signoff.signed_by == olga.user and signoff.period == today
    assert AuditEntry.objects.get(action="review.signed_off").data["digest"] == signoff.digest
