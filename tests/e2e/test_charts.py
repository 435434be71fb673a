"""The charts in a real browser, served by uvicorn (websockets) as in production.

The bot page draws the sandbox's candles with the bot's orders and fills; while the bot trades (orders through
the real gate and the real ccxt client, run in a thread as its worker would) an order adds its dot and its open-
order line, a fill its marker, and a tick's PnL moves the last candle and the PnL line: all without a reload.
The dashboard draws the fleet's PnL and a sparkline per bot, and follows the ticks too. Nothing the library does
may break the Content-Security-Policy. Screenshots at 1366 and 390 px wide go to the run's screens/charts/ folder.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import ConsoleMessage, Page, Response, expect

from apps.bots.models import Bot
from apps.core.display import pnl_text
from apps.strategies.base import OrderIntent
from apps.trading import events as trading_events
from apps.trading.gate import place_order
from apps.trading.ledger import mark
from apps.trading.models import Fill, Position
from apps.trading.sync import orders_sync
from tests.e2e.conftest import browser_login, live_grid_bot, shots_dir
from tests.e2e.test_live import AsgiServer, as_worker, asgi_server  # noqa: F401 - asgi_server is a fixture
from tests.keys import Key
from tests.people import make_person

SHOTS = shots_dir("charts")
SYMBOL = "BTC/USDT"


def shoot(page: Page, name: str, chart: str) -> None:
    """The whole page and the chart alone, at a desktop's width and a phone's."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width, height in (("desktop", 1366, 900), ("phone", 390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)  # the charts follow their container's new size
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        page.locator(chart).screenshot(path=str(SHOTS / f"{name}-{label}-chart.png"))
        box = page.locator(chart).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width  # it fits the screen
    page.set_viewport_size({"width": 1366, "height": 900})


DARK = {"--bg": "#0d1117", "--card": "#161b22", "--fg": "#e6edf3", "--muted": "#8b949e"}


def go_dark(page: Page, name: str, chart: str) -> None:
    """A dark theme (the page's colours set as its stylesheet would) and the system switching to dark: the chart
    takes the page's colours again."""
    set_vars = "(dark) => Object.entries(dark).forEach(([k, v]) => document.documentElement.style.setProperty(k, v))"
    page.evaluate(set_vars, DARK)
    expect(page.locator(chart)).to_have_attribute("data-scheme", "light")
    page.emulate_media(color_scheme="dark")
    expect(page.locator(chart)).to_have_attribute("data-scheme", "dark")
    page.wait_for_timeout(100)
    page.locator(chart).screenshot(path=str(SHOTS / f"{name}-dark-chart.png"))
    page.emulate_media(color_scheme="light")


def count(page: Page, selector: str, name: str) -> int:
    return int(page.locator(selector).get_attribute(f"data-{name}") or 0)


def tick(bot: Bot, price: str) -> None:
    """What a tick publishes at its end: the bot's PnL, its positions marked at `price`."""
    for position in Position.objects.filter(bot=bot):
        mark(position, Decimal(price))
        position.save()
    trading_events.heartbeat(bot.pk, equity=None, prices={SYMBOL: Decimal(price)})


@pytest.mark.django_db(transaction=True)
def test_the_charts_draw_the_sandbox_and_grow_with_each_order_fill_and_tick(
    asgi_server: AsgiServer,  # noqa: F811 - the fixture imported above
    page: Page,
    new_key: Callable[..., Key],
    sandbox: Any,
) -> None:
    refused: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Uncaught" in message.text:
            refused.append(message.text)

    def failed(response: Response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            refused.append(f"{response.status} {response.url}")

    page.on("console", watch)
    page.on("pageerror", lambda error: refused.append(str(error)))
    page.on("response", failed)
    bot, key = live_grid_bot(
        new_key,
        sandbox,
        label="Charts",
        name="Grid on the chart",
        params={"lower": "58000", "upper": "62000", "levels": 5, "order_amount": "0.01"},
        symbols=[SYMBOL],
    )
    sandbox.admin.set_price(SYMBOL, "60000")
    who = make_person("cora", "viewer")
    base = asgi_server.url
    browser_login(page, base, "cora", who.code())
    try:
        page.goto(f"{base}/bots/{bot.pk}/")
        chart = "#bot-chart"
        expect(page.locator(chart)).to_have_attribute("data-state", "ready")
        expect(page.locator("#live-status")).to_have_text("Live")
        assert page.locator(f"{chart} canvas").count() > 0
        assert count(page, chart, "candles") == 300
        assert (count(page, chart, "fills"), count(page, chart, "orders"), count(page, chart, "levels")) == (0, 0, 5)
        expect(page.locator(f"{chart} [data-chart-legend]")).to_contain_text("BTC/USDT · 1m")

        # An order: its dot and its open-order line. Then the price crosses it: its fill's marker, its line gone.
        client = key.exchange()
        intent = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), Decimal("59900"), "chart-0")
        as_worker(functools.partial(place_order, bot=bot, intent=intent, exchange=client))
        expect(page.locator(chart)).to_have_attribute("data-orders", "1")
        expect(page.locator(chart)).to_have_attribute("data-open-orders", "1")
        sandbox.admin.set_price(SYMBOL, "59800")
        as_worker(lambda: orders_sync(bot=bot, exchange=client))
        assert Fill.objects.filter(order__bot=bot).count() == 1
        expect(page.locator(chart)).to_have_attribute("data-fills", "1")
        expect(page.locator(chart)).to_have_attribute("data-open-orders", "0")

        # A tick: the last candle closes at its price, the PnL line ends at its total.
        updates = count(page, chart, "live-updates")
        as_worker(lambda: tick(bot, "59700"))
        position = Position.objects.get(bot=bot, symbol=SYMBOL)
        total = position.realized_pnl + position.unrealized_pnl
        assert total < 0
        expect(page.locator(f"{chart} [data-chart-legend]")).to_contain_text(f"C 59700.00 · PnL {total:.2f} USDT")
        assert count(page, chart, "live-updates") > updates
        shoot(page, "bot-page", chart)
        go_dark(page, "bot-page", chart)

        # Reloaded, the server draws what the live updates built: the fill and the PnL.
        page.reload()
        expect(page.locator(chart)).to_have_attribute("data-state", "ready")
        assert count(page, chart, "fills") == 1 and count(page, chart, "orders") == 1

        # The dashboard: the fleet's PnL and the bot's sparkline, moved by the next fill and tick.
        page.goto(f"{base}/")
        fleet = "#fleet-chart"
        expect(page.locator(fleet)).to_have_attribute("data-state", "ready")
        expect(page.locator("#live-status")).to_have_text("Live")
        assert page.locator(f"{fleet} canvas").count() > 0
        assert count(page, fleet, "points") == 288 and count(page, fleet, "bots") >= 1
        assert page.locator(f'tr[data-bot-row="{bot.pk}"] .sparkline canvas').count() > 0
        before = count(page, fleet, "live-updates")
        sell = OrderIntent(SYMBOL, "sell", "limit", Decimal("0.005"), Decimal("59950"), "chart-1")
        as_worker(functools.partial(place_order, bot=bot, intent=sell, exchange=client))
        sandbox.admin.set_price(SYMBOL, "60000")
        as_worker(lambda: orders_sync(bot=bot, exchange=client))
        assert Fill.objects.filter(order__bot=bot).count() == 2
        as_worker(lambda: tick(bot, "60000"))
        position.refresh_from_db()
        total = position.realized_pnl + position.unrealized_pnl
        expect(page.locator(fleet)).to_have_attribute("data-last", f"{total:.2f}")
        assert count(page, fleet, "live-updates") > before
        # The fleet table writes it as every page writes a gain or loss: signed, with its unit and word.
        expect(page.locator(f'tr[data-bot-row="{bot.pk}"] [data-field=pnl]')).to_have_text(pnl_text(total, "USDT"))
        shoot(page, "dashboard", fleet)
        go_dark(page, "dashboard", fleet)
        assert not refused, refused
    finally:
        sandbox.admin.release_price(SYMBOL)
