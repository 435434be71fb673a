"""The main screens at a desk and on a phone, light and dark, as a new operator sees them.

Served by uvicorn (websockets) as in production, with a bot trading on the sandbox exchange: the dashboard,
that bot's page, the new-bot form sent back with errors, the trade history, the audit log and a kill report.
At 1366 px and 390 px wide each page is photographed (under SHOTS, not in git) and checked: no sideways
scrolling of the page on the phone, every <time> written the one way ("2026-12-04 20:01:32 UTC (12 s ago)"),
the menu folded on the phone and opened by its button, and a dark background when the system asks for dark.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, ViewportSize, expect

from apps.bots.models import Bot
from apps.killswitch.models import KillRun
from apps.strategies.base import OrderIntent
from apps.trading import events as trading_events
from apps.trading.gate import place_order
from apps.trading.sync import orders_sync
from tests.e2e.conftest import browser_login, live_grid_bot, shots_dir
from tests.e2e.test_live import AsgiServer, as_worker, asgi_server  # noqa: F401 - asgi_server is a fixture
from tests.keys import Key
from tests.people import make_person

SHOTS = shots_dir("screens")
WIDE = ViewportSize(width=1366, height=900)
PHONE = ViewportSize(width=390, height=844)
TIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((\d+ (s|min|h|d) ago|in \d+ (s|min|h|d))\)$")


def running_bot(new_key: Callable[..., Key], sandbox: Any) -> Bot:
    """A live grid bot on the sandbox with resting orders, a fill, a position and its PnL."""
    bot, key = live_grid_bot(
        new_key,
        sandbox,
        label="Sandbox main",
        name="Grid BTC",
        daily_loss_limit=Decimal("250"),
        max_drawdown_pct=Decimal("10"),
        observed_state="running",
        last_heartbeat=timezone.now(),
    )
    client = key.exchange()
    sandbox.admin.set_price("BTC/USDT", "30000")
    for n, price in enumerate(["29900", "29500", "29000"]):
        intent = OrderIntent("BTC/USDT", "buy", "limit", Decimal("0.01"), Decimal(price), f"screen-{n}")
        as_worker(functools.partial(place_order, bot=bot, intent=intent, exchange=client))
    sandbox.admin.set_price("BTC/USDT", "29800")  # crosses the 29900 buy
    as_worker(lambda: orders_sync(bot=bot, exchange=client))
    as_worker(lambda: trading_events.heartbeat(bot.pk, equity=None))
    return bot


def kill_report(bot: Bot) -> KillRun:
    """A finished kill run whose report has every part: steps, and balances free, used and total."""
    run = KillRun.objects.create(scope="all", reason="drill: screens", requested_via="shell")
    KillRun.objects.filter(pk=run.pk).update(
        status="done",
        started_at=run.created_at,
        finished_at=timezone.now(),
        steps=[
            {
                "name": "revoke",
                "ms": 40,
                "at_ms": 60,
                "detail": "1 bot token revoked; 0 unused bot credentials destroyed",
            },
            {"name": "stop", "ms": 150, "at_ms": 210, "detail": "1 worker reported stopped"},
            {"name": "cancel", "ms": 300, "at_ms": 400, "detail": "2 orders cancelled on 1 account"},
            {"name": "verify", "ms": 50, "at_ms": 850, "detail": "0 still open"},
        ],
        orders_cancelled=2,
        workers_stopped=1,
        balances_after={
            str(bot.account_id): {
                "label": bot.account.label,
                "total": {"BTC": "0.00999000", "USDT": "9701.00000000"},
                "free": {"BTC": "0.00999000", "USDT": "9701.00000000"},
                "reached": True,
            }
        },
    )
    return run


def check(page: Page, name: str, ready: Callable[[], None]) -> None:
    """Photograph the page wide and on a phone, and check what every screen must do."""
    page.set_viewport_size(WIDE)
    ready()
    page.screenshot(path=str(SHOTS / f"{name}-1366.png"), full_page=True)
    times = page.locator("main time").all_inner_texts()
    bad = [t for t in times if not TIME_TEXT.match(" ".join(t.split()))]
    assert not bad, f"{name}: times not in the one format: {bad[:5]}"

    page.set_viewport_size(PHONE)
    page.wait_for_timeout(100)  # the layout settles
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{name}: the page scrolls sideways at 390 px ({width[0]} > {width[1]})"
    nav, menu = page.locator("nav.mainnav"), page.get_by_role("button", name="Menu")
    expect(nav).to_be_hidden()
    page.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
    menu.click()
    expect(nav).to_be_visible()
    expect(nav.get_by_role("link", name="Audit log")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    if name == "dashboard":
        page.screenshot(path=str(SHOTS / f"{name}-390-menu.png"))
    menu.click()
    expect(nav).to_be_hidden()


def dark_background(page: Page) -> float:
    """The relative luminance (0 black, 1 white) of the body's computed background."""
    rgb = page.evaluate("getComputedStyle(document.body).backgroundColor")
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", rgb)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.django_db(transaction=True)
def test_every_main_screen_reads_one_way_at_a_desk_and_on_a_phone_light_and_dark(
    asgi_server: AsgiServer,  # noqa: F811 - the fixture imported above
    page: Page,
    new_key: Callable[..., Key],
    sandbox: Any,
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        bot = running_bot(new_key, sandbox)
        run = kill_report(bot)
        who = make_person("olga", "operator")
        base = asgi_server.url
        browser_login(page, base, "olga", who.code())

        def live() -> None:
            expect(page.locator("#live-status")).to_have_text("Live")

        page.goto(f"{base}/")
        check(page, "dashboard", live)
        fleet_row = page.locator(f'tr[data-bot-row="{bot.pk}"]')
        expect(fleet_row.locator("[data-field=state]")).to_have_text("Running")
        expect(fleet_row.locator("[data-field=pnl] .pnl")).to_contain_text("USDT")

        # The form first: loading the exchange's markets there tells this server their decimals.
        page.goto(f"{base}/bots/new/")
        page.locator("input[name=name]").fill("Second grid")
        page.locator("input[name=symbols]").fill("BTC/USDT, FAKE/USDT")
        for field, value in {"max_order_notional": "100", "max_position_notional": "1000"}.items():
            page.locator(f"input[name={field}]").fill(value)
        page.get_by_role("button", name="Save").click()
        check(page, "bot-form-errors", lambda: expect(page.locator(".error").first).to_be_visible())

        page.goto(f"{base}/bots/{bot.pk}/")
        check(page, "bot-page", live)
        facts = page.locator(".facts")
        expect(facts.locator("[data-field=state]")).to_have_text("Running")
        expect(facts).to_contain_text("order ≤ 1,000.00 USDT")
        # Prices and amounts at the sandbox market's decimals (price 0.01, amount 0.00001).
        expect(page.locator("#open-orders tr[data-order]").first).to_contain_text("29,000.00")
        expect(page.locator("#open-orders tr[data-order]").first).to_contain_text("0.01000")
        expect(page.locator("#fills tr").first).to_contain_text("29,900.00")

        page.goto(f"{base}/trades/")
        check(page, "trades", lambda: expect(page.locator("#history-rows tr")).to_have_count(1))
        expect(page.locator("#history-rows tr").first).to_contain_text("29,900.00 USDT")

        page.goto(f"{base}/audit/")
        check(page, "audit", lambda: expect(page.locator("table tbody tr").first).to_be_visible())
        expect(page.locator("table tbody")).to_contain_text("Exchange account added")
        expect(page.locator("table tbody")).to_contain_text("exchange_account.created")

        page.goto(f"{base}/killswitch/runs/{run.pk}/")
        check(page, "kill-report", lambda: expect(page.locator("#run-balances tr")).to_have_count(2))
        balances = page.locator("#run-balances tr")
        expect(balances.nth(0)).to_have_text(re.compile(r"Sandbox main\s*BTC\s*0\.00999\s*0\s*0\.00999"))
        expect(balances.nth(1)).to_contain_text("9,701")
        expect(page.locator("#run-steps")).to_contain_text("Revoke bot credentials")

        # Dark, as the system asks: the same pages on a dark background.
        page.emulate_media(color_scheme="dark")
        for name, path in (("dashboard", "/"), ("bot-page", f"/bots/{bot.pk}/"), ("trades", "/trades/")):
            page.goto(f"{base}{path}")
            if name != "trades":
                live()
                page.wait_for_timeout(300)  # the charts draw what they fetched
            assert dark_background(page) < 0.1, f"{name}: the background is not dark"
            for label, size in (("1366", WIDE), ("390", PHONE)):
                page.set_viewport_size(size)
                page.screenshot(path=str(SHOTS / f"{name}-{label}-dark.png"), full_page=True)
        page.emulate_media(color_scheme="light")
        assert dark_background(page) > 0.9
    finally:
        sandbox.admin.release_price("BTC/USDT")
