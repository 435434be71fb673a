"""Bots in a real browser: the strategy's form, a validation error that keeps the input, create, start; the
list's fleet actions (tick bots, start or stop them together, each bot's outcome)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from tests.e2e.conftest import browser_login
from tests.e2e.test_bot_page_live import shoot
from tests.keys import Key
from tests.people import make_person


def test_an_operator_configures_and_starts_a_bot(
    live_server: LiveServer, page: Page, new_key: Callable[..., Key]
) -> None:
    base = live_server.url
    key = new_key(ip_restrict=True)
    exchange_account_create(
        label="Sandbox",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    who = make_person("olga", "operator")
    browser_login(page, base, "olga", who.code())

    page.get_by_role("link", name="Bots", exact=True).click()
    page.get_by_role("link", name="New bot").click()
    page.get_by_role("button", name="DCA with take-profit").click()
    expect(page.locator("legend", has_text="DCA with take-profit parameters")).to_be_visible()
    page.locator("input[name=name]").fill("Weekly DCA")
    page.locator("input[name=symbols]").fill("ETH/USDT, FAKE/USDT")
    for name, value in {
        "max_order_notional": "100",
        "max_position_notional": "1000",
        "daily_loss_limit": "50",
        "max_drawdown_pct": "5",
        "dca-quote_per_buy": "25",
    }.items():
        page.locator(f"input[name={name}]").fill(value)
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".error", has_text="Not listed on sandbox: FAKE/USDT")).to_be_visible()
    expect(page.locator("input[name=name]")).to_have_value("Weekly DCA")  # the input survives the error
    assert not Bot.objects.exists()

    page.locator("input[name=symbols]").fill("ETH/USDT")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("h1")).to_have_text("Weekly DCA")
    expect(page.locator(".facts")).to_contain_text("quote_per_buy=25")
    page.get_by_role("button", name="Start").click()
    expect(page.locator(".facts")).to_contain_text("wanted: Running")
    assert Bot.objects.get().desired_state == "running"


def test_an_operator_starts_and_stops_ticked_bots_from_the_list_and_reads_each_outcome(
    live_server: LiveServer, page: Page, new_key: Callable[..., Key]
) -> None:
    base = live_server.url
    account, _ = exchange_account_create(
        label="Sandbox",
        exchange_id="sandbox",
        credentials=new_key(ip_restrict=True).form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    limits = {
        "max_order_notional": Decimal("100"),
        "max_position_notional": Decimal("1000"),
        "daily_loss_limit": Decimal("100"),
        "max_drawdown_pct": Decimal("10"),
    }
    for name in ("Grid east", "Grid west", "DCA weekly"):
        Bot.objects.create(name=name, account=account, strategy="grid", symbols=["BTC/USDT"], **limits)
    Bot.objects.create(
        name="Halted grid",
        account=account,
        strategy="grid",
        symbols=["BTC/USDT"],
        halted=True,
        halt_reason="daily loss 120 beyond 100",
        **limits,
    )
    who = make_person("olga", "operator")
    browser_login(page, base, "olga", who.code())
    page.goto(f"{base}/bots/")
    page.get_by_label("Select Grid east").check()
    page.get_by_label("Select Grid west").check()
    page.get_by_label("Select Halted grid").check()
    shoot(page, "bots-list")
    page.get_by_role("button", name="Start selected").click()
    messages = page.locator("ul.messages")
    expect(messages).to_contain_text("Grid east: start requested")
    expect(messages).to_contain_text("Grid west: start requested")
    expect(messages.locator("li.error")).to_have_text(
        "Halted grid: refused: Halted grid is halted (daily loss 120 beyond 100); "
        "an admin must clear the halt first (on the bot's page)."
    )
    shoot(page, "bots-list-after-start")
    states = dict(Bot.objects.values_list("name", "desired_state"))
    assert states == {"Grid east": "running", "Grid west": "running", "DCA weekly": "stopped", "Halted grid": "stopped"}

    page.get_by_role("button", name="Stop selected").click()  # nothing ticked
    expect(page.locator("#fleet-error")).to_have_text("Select at least one bot to start or stop; nothing was changed.")
    page.get_by_label("Select Grid west").check()
    expect(page.get_by_label("Select every bot")).to_have_js_property("indeterminate", True)
    page.get_by_label("Select every bot").check()  # ticks all four
    page.get_by_role("button", name="Stop selected").click()
    expect(page.locator("ul.messages li")).to_have_count(4)
    expect(page.locator("ul.messages")).to_contain_text("Grid west: stop requested")
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}

    # A stopped bot is archived from its page: out of the list, shown by the "show archived" filter.
    page.get_by_role("link", name="Grid west").click()
    page.get_by_role("button", name="Archive").click()
    expect(page.locator(".archived-banner")).to_contain_text("Archived on")
    expect(page.get_by_role("button", name="Start")).to_have_count(0)
    shoot(page, "bot-archived")
    page.get_by_role("link", name="Bots", exact=True).click()
    expect(page.locator("table").first).not_to_contain_text("Grid west")
    page.get_by_role("link", name="Show archived bots (1)").click()
    expect(page.locator("table").first).to_contain_text("Grid west")
    expect(page.get_by_role("button", name="Start selected")).to_have_count(0)
    assert Bot.objects.get(name="Grid west").archived_at is not None
