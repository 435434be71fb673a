"""The bot page in a real browser, served by uvicorn (websockets) as in production.

While the bot trades on the sandbox exchange (orders through the real gate and the real ccxt client,
run in a thread as a bot worker would), its open-orders table fills in, a filled order leaves it for
the fills and positions tables, and an order the gate refuses appears as a warning at the top: all
without a reload.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.events.models import Event
from apps.events.services import publish
from apps.strategies.base import OrderIntent
from apps.trading import events as trading_events
from apps.trading.gate import OrderRefused, place_order
from apps.trading.models import Order, Position
from apps.trading.sync import orders_sync
from tests.e2e.conftest import browser_login, live_grid_bot, shots_dir
from tests.e2e.test_live import AsgiServer, as_worker, asgi_server  # noqa: F401 - asgi_server is a fixture
from tests.keys import Key
from tests.people import make_person

SHOTS = shots_dir("bot-page")


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width, height in (("desktop", 1280, 900), ("phone", 390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def refused(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with pytest.raises(OrderRefused):
            fn()

    return run


@pytest.mark.django_db(transaction=True)
def test_the_open_orders_fill_in_live_and_a_refused_order_is_a_warning_at_the_top(
    asgi_server: AsgiServer,  # noqa: F811 - the fixture imported above
    page: Page,
    new_key: Callable[..., Key],
    sandbox: Any,
) -> None:
    bot, key = live_grid_bot(new_key, sandbox, label="Bot page", name="Grid on the page")
    who = make_person("vera", "viewer")
    base = asgi_server.url
    browser_login(page, base, "vera", who.code())
    page.goto(f"{base}/bots/{bot.pk}/")
    expect(page.locator("#live-status")).to_have_text("Live")
    orders = page.locator("#open-orders")
    expect(orders).to_have_text("None.")
    expect(page.locator("#refusal-warning")).to_be_hidden()
    page.evaluate("window.__sameDocument = 42")  # survives only if the page is never reloaded

    client = key.exchange()
    sandbox.admin.set_price("BTC/USDT", "30000")
    try:
        for n, price in enumerate(["29900", "29500", "29000"]):
            intent = OrderIntent("BTC/USDT", "buy", "limit", Decimal("0.01"), Decimal(price), f"page-{n}")
            as_worker(functools.partial(place_order, bot=bot, intent=intent, exchange=client))
        # The three resting buys appear, newest first, each in its own row.
        expect(orders.locator("tr[data-order]")).to_have_count(3)
        expect(orders.locator("tr[data-order]").nth(0)).to_contain_text("29,000")
        expect(orders.locator("tr[data-order]").nth(2)).to_contain_text("29,900")
        expect(orders).not_to_contain_text("None.")
        expect(orders.locator("[data-field=status]").nth(0)).to_have_text("Open")
        assert Order.objects.filter(bot=bot, status="open").count() == 3

        # The price crosses the highest buy: it fills and leaves the table for the fills and positions.
        sandbox.admin.set_price("BTC/USDT", "29800")
        as_worker(lambda: orders_sync(bot=bot, exchange=client))
        filled = Order.objects.get(bot=bot, price=Decimal("29900"))
        assert filled.status == "filled"
        expect(orders.locator(f'tr[data-order="{filled.pk}"]')).to_have_count(0)
        expect(orders.locator("tr[data-order]")).to_have_count(2)
        expect(page.locator("#fills tr").first).to_contain_text("29,900")
        held = Position.objects.get(bot=bot, symbol="BTC/USDT").base_quantity  # 0.01 less the fee in BTC
        assert Decimal("0.009") < held < Decimal("0.01")
        expect(page.locator('#positions tr[data-symbol="BTC/USDT"] [data-field=held]')).to_have_text(
            format(held.normalize(), "f")
        )

        # A tick's heartbeat brings the PnL breakdown (the position is marked at 29900 less the fee).
        as_worker(lambda: trading_events.heartbeat(bot.pk, equity=None))
        expect(page.locator("[data-field=pnl-note]")).to_have_count(0)
        unrealized = Position.objects.get(bot=bot, symbol="BTC/USDT").unrealized_pnl
        loss = f"\u2212{-unrealized:.2f} USDT (loss)" if unrealized < 0 else f"+{unrealized:.2f} USDT (gain)"
        expect(page.locator("[data-field=pnl-unrealized]")).to_have_text(loss)

        # Too large an order: the gate refuses it and the page warns at the top.
        big = OrderIntent("BTC/USDT", "buy", "limit", Decimal("0.05"), Decimal("29990"), "page-big")
        as_worker(refused(lambda: place_order(bot=bot, intent=big, exchange=client)))
        warning = page.locator("#refusal-warning")
        expect(warning).to_be_visible()
        expect(warning).to_contain_text("Orders refused:")
        expect(warning).to_contain_text("Order notional 1499.50 exceeds the limit 1000.00.")
        expect(page.locator("#refusals tr.refused").first).to_contain_text("Order notional 1499.50")
        expect(orders.locator("tr[data-order]")).to_have_count(2)  # the refused order never became one
        assert page.evaluate("window.__sameDocument") == 42  # all of it arrived without a reload
        shoot(page, "bot-page")

        # Reloaded, the server renders the same state the live updates built.
        page.reload()
        expect(page.locator("#open-orders tr[data-order]")).to_have_count(2)
        expect(page.locator("#refusal-warning")).to_contain_text("Order notional 1499.50 exceeds the limit 1000.00.")
        expect(page.locator("#live-status")).to_have_text("Live")
        # An event the server had already rendered (published while the page was being built, so after
        # its cursor) adds no second row; a new one still arrives.
        for kind in ("fill", "gate_refusal"):
            again = Event.objects.filter(bot=bot, kind=kind).latest("seq")
            as_worker(functools.partial(publish, kind=again.kind, bot_id=bot.pk, data=again.payload))
        sandbox.admin.set_price("BTC/USDT", "29400")  # crosses the 29500 buy
        as_worker(lambda: orders_sync(bot=bot, exchange=client))
        expect(page.locator("#open-orders tr[data-order]")).to_have_count(1)
        expect(page.locator("#fills tr")).to_have_count(2)
        expect(page.locator("#refusals tr")).to_have_count(1)
        expect(page.locator("#refusal-warning li")).to_have_count(1)
    finally:
        sandbox.admin.release_price("BTC/USDT")
