"""Trade history in a real browser: a viewer opens Trades, filters by bot, pages, and exports the CSV."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.trading.models import Order, Position
from tests.e2e.conftest import browser_login, shots_dir
from tests.people import make_person
from tests.trading.test_history import T0, _account, _bot, _fill, _order

SHOTS = shots_dir("trade-history")
SIZES = (("desktop", 1366, 900), ("phone", 390, 844))


def shoot_and_check_width(page: Page, name: str) -> None:
    """Screenshots at desktop and phone width; at each, the page itself must not scroll sideways
    (wide tables scroll inside their wrapper)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name} at {width} px scrolls sideways by {overflow} px"
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        page.screenshot(path=str(SHOTS / f"{name}-{label}-top.png"))  # the first screen, at full size
    page.set_viewport_size({"width": 1366, "height": 900})


@pytest.mark.django_db(transaction=True)
def test_a_viewer_filters_by_bot_pages_and_exports(live_server: LiveServer, page: Page) -> None:
    base = live_server.url
    account = _account()
    grid, dca = _bot(account, "Grid BTC", Bot.Mode.LIVE), _bot(account, "DCA paper", Bot.Mode.PAPER)
    for i in range(60):
        order = _order(
            grid,
            symbol="BTC/USDT",
            side="buy" if i % 2 else "sell",
            status=Order.Status.FILLED,
            at=T0 + timedelta(minutes=i),
            price=f"{60000 + i}.25",
            amount="0.0015",
        )
        _fill(order, at=T0 + timedelta(minutes=i, seconds=20), fee="0.09", fee_currency="USDT")
    for i in range(5):
        order = _order(dca, symbol="ETH/BTC", side="buy", status=Order.Status.FILLED, at=T0, price="0.052", amount="2")
        _fill(order, at=T0 + timedelta(seconds=i), fee="0.001", fee_currency="BNB")
    _order(grid, symbol="BTC/USDT", side="buy", status=Order.Status.OPEN, at=T0, price="59000", amount="0.001")
    Position.objects.create(bot=grid, symbol="BTC/USDT", realized_pnl="41.75")
    vera = make_person("vera", "viewer")
    browser_login(page, base, "vera", vera.code())

    page.get_by_role("link", name="Trades", exact=True).click()
    expect(page.locator("h1")).to_have_text("Trades")
    expect(page.locator("#history-rows tr")).to_have_count(50)  # 65 fills: the newest 50

    page.get_by_label("Bot").select_option(label="Grid BTC")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"/trades/\?bot={grid.pk}&"))  # the form sends its empty fields too
    rows = page.locator("#history-rows tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text("Grid BTC")
    expect(page.locator("#history-rows")).not_to_contain_text("DCA paper")
    expect(page.locator("#total-fills")).to_have_text("60")
    expect(page.locator("#total-realized")).to_have_text("+41.75 USDT (gain)")
    expect(page.locator("#total-fees")).to_have_text("5.40 USDT")
    shoot_and_check_width(page, "fills-by-bot")

    page.get_by_role("link", name="Older →").click()
    expect(rows).to_have_count(10)
    expect(page.get_by_role("link", name="← Newer")).to_be_visible()
    expect(page.get_by_role("link", name="Older →")).to_have_count(0)
    shoot_and_check_width(page, "fills-older-page")

    with page.expect_download() as saved:
        page.locator("#export-csv").click()
    download = saved.value
    body = Path(download.path()).read_text()
    exported = list(csv.DictReader(io.StringIO(body)))
    assert len(exported) == 60 and {r["bot"] for r in exported} == {"Grid BTC"}
    assert download.suggested_filename.startswith("fills-") and download.suggested_filename.endswith(".csv")
    entry = AuditEntry.objects.get(action="trades.exported")
    assert entry.actor == "vera" and entry.data["filters"] == {"bot": grid.pk}

    page.get_by_role("link", name="Orders", exact=True).click()
    expect(page).to_have_url(f"{base}/trades/orders/?bot={grid.pk}")
    expect(page.locator("#history-rows tr")).to_have_count(50)
    page.get_by_label("Status").select_option("open")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#history-rows tr")).to_have_count(1)
    # At the market's decimals once this process has loaded the markets (a bot form did), else plainly.
    expect(page.locator("#history-rows tr").first).to_contain_text(re.compile(r"59,000(\.00)? USDT"))
    shoot_and_check_width(page, "orders-open")

    # A bad filter is explained, not run.
    page.goto(f"{base}/trades/?since=yesterday")
    expect(page.locator("[role=alert]").first).to_contain_text("Enter a valid date/time.")
    shoot_and_check_width(page, "bad-filter")
