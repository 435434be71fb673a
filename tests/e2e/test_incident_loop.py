"""From incident back to trading, in a real browser, with every process as in production.

Three live bots on one sandbox account are started together from the bots list. The price falls:
the one that bought loses beyond its own daily limit and its worker's tick halts it; the two that
hold nothing trade on (bots are judged by their own ledgers, not the shared account). An admin
reads the halt on the bot's page, clears it with a fresh code, a reason and an explicit override
(the loss still holds) and starts it: it trades again. Then the panic button: the report reaches
"Done" in place; resume restarts the three bots the kill stopped, and they trade again.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from apps.trading.models import Order
from tests.e2e.conftest import browser_login
from tests.e2e.test_kill_story import console, shots  # noqa: F401 - the fixture: web, control worker, fleet
from tests.e2e.test_live import AsgiServer
from tests.fleet_support import wait_until
from tests.keys import Key
from tests.people import make_person

SYMBOL = "BTC/USDT"
# BTC at 60,000: the loser's grid rests buys of 0.01 at 55,000 and 50,000; the others rest far below.
LOSER = {"lower": "50000", "upper": "65000", "levels": 4, "order_amount": "0.01"}
STEADY = {"lower": "20000", "upper": "30000", "levels": 3, "order_amount": "0.001"}


def _bot(account: Any, name: str, params: dict[str, Any]) -> Bot:
    return Bot.objects.create(
        name=name,
        account=account,
        strategy="grid",
        params=params,
        symbols=[SYMBOL],
        mode=Bot.Mode.LIVE,
        tick_interval_s=1,
        max_order_notional=Decimal("1000"),
        max_position_notional=Decimal("1300"),
        max_open_orders=10,
        max_orders_per_minute=30,
        daily_loss_limit=Decimal("200"),
        max_drawdown_pct=Decimal("90"),
    )


def _open_on_exchange(bot: Bot) -> int:
    return Order.objects.filter(bot=bot, status__in=Order.OPEN_STATUSES, paper=False).count()


@pytest.mark.django_db(transaction=True)
def test_start_three_a_breaker_halts_one_clear_it_panic_resume_and_restart_trading_again(
    console: AsgiServer,  # noqa: F811
    page: Page,
    new_key: Callable[..., Key],
    sandbox: Any,
) -> None:
    key = new_key(ip_restrict=True)
    sandbox.admin.set_balances(key.api_key, {"USDT": "100000", "BTC": "1"})
    account, _ = exchange_account_create(
        label="Loop account",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    sandbox.admin.set_price(SYMBOL, "60000", hold=True)
    try:
        bots = [
            _bot(account, "Loop loser", LOSER),
            _bot(account, "Loop east", STEADY),
            _bot(account, "Loop west", STEADY),
        ]
        _loop(page, console.url, key, sandbox, bots)
    finally:
        sandbox.admin.release_price(SYMBOL)


def _loop(page: Page, base: str, key: Key, sandbox: Any, bots: list[Bot]) -> None:
    loser, east, west = bots
    who = make_person("grace", "admin")
    browser_login(page, base, "grace", who.code())

    # 1. Start the three together from the list.
    page.get_by_role("link", name="Bots", exact=True).click()
    for bot in bots:
        page.get_by_label(f"Select {bot.name}").check()
    page.get_by_role("button", name="Start selected").click()
    for bot in bots:
        expect(page.locator("ul.messages")).to_contain_text(f"{bot.name}: start requested")
    wait_until(lambda: all(_open_on_exchange(b) >= 2 for b in bots), "the three grids' resting orders", timeout=90)

    # 2. The price falls: the loser's buys fill and it loses beyond its own limit; the others hold nothing.
    sandbox.admin.set_price(SYMBOL, "40000", hold=True)
    wait_until(lambda: Bot.objects.get(pk=loser.pk).halted, "the loser's halt", timeout=60)
    loser.refresh_from_db()
    assert loser.halt_kind == Bot.HaltKind.BREAKER and loser.halt_data["reason"] == "daily_loss_limit"
    assert Decimal(loser.halt_data["loss"]) > Decimal("200")
    for bot in (east, west):
        bot.refresh_from_db()
        assert not bot.halted and bot.desired_state == Bot.Desired.RUNNING, bot.name

    # 3. The admin reads the halt on its page and clears it: a fresh code, a reason, an explicit override.
    page.goto(f"{base}/bots/{loser.pk}/")
    panel = page.locator(".haltpanel")
    expect(panel).to_contain_text("Halted: Circuit breaker")
    expect(panel).to_contain_text("What halted it still holds")
    expect(panel).to_contain_text(loser.halt_data["loss"])
    shots(page, "halt-panel", clip=".haltpanel")
    panel.locator("#halt-clear-reason").fill("loss reviewed, range moved down")
    panel.get_by_label("Clear it anyway").check()
    panel.get_by_role("button", name="Clear the halt").click()
    if "/accounts/step-up/" in page.url:  # the clear asks for a fresh code, then the form is sent again
        page.locator("input[name=code]").fill(who.code(1))
        page.get_by_role("button", name="Confirm").click()
        panel.locator("#halt-clear-reason").fill("loss reviewed, range moved down")
        panel.get_by_label("Clear it anyway").check()
        panel.get_by_role("button", name="Clear the halt").click()
    expect(page.locator("ul.messages")).to_contain_text("halt is cleared (overriding what still held)")
    expect(page.locator(".haltpanel")).to_have_count(0)
    cleared = AuditEntry.objects.get(action="bot.halt_cleared")
    assert (cleared.actor, cleared.otp_verified, cleared.ip) == ("grace", True, "127.0.0.1")

    # It starts again and trades: its holdings go on sale above what it paid.
    page.get_by_role("button", name="Start", exact=True).click()
    wait_until(lambda: _open_on_exchange(loser) >= 1, "the cleared bot's new order", timeout=60)
    assert not Bot.objects.get(pk=loser.pk).halted

    # 4. The panic button; the report reaches its final state in place.
    page.get_by_role("link", name="Dashboard", exact=True).click()
    shots(page, "dashboard-before-panic")
    page.locator("#dash-kill-reason").fill("loop: drill")
    page.get_by_role("button", name="Kill switch: halt everything now").click()
    expect(page.locator("#run-status")).to_have_text("Done", timeout=90_000)
    run = KillRun.objects.get()
    assert (
        run.orders_still_open == 0 and not run.open_unknown and sorted(run.bots_stopped) == sorted(b.pk for b in bots)
    )
    assert sandbox.admin.open_orders(key.api_key) == []

    # 5. Resume, restarting the three bots the kill stopped; they trade again.
    wait_until(
        lambda: not Bot.objects.filter(pk__in=[b.pk for b in bots]).exclude(observed_state="stopped").exists(),
        "the workers to report stopped",
        timeout=60,
    )
    page.goto(f"{base}/killswitch/resume/")
    if "/accounts/step-up/" in page.url:
        page.locator("input[name=code]").fill(who.code(1))
        page.get_by_role("button", name="Confirm").click()
    expect(page.locator("legend")).to_have_text("Restart the 3 bots that were running")
    page.locator("#id_reason").fill("loop: drill over")
    page.get_by_role("button", name="Resume trading").click()
    expect(page.locator("h1")).to_have_text("Dashboard")
    wait_until(lambda: all(_open_on_exchange(b) >= 1 for b in bots), "the three bots trading again", timeout=90)
    resumed = AuditEntry.objects.get(action="killswitch.resumed")
    assert (resumed.actor, resumed.otp_verified, resumed.ip) == ("grace", True, "127.0.0.1")
