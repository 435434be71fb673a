"""Bots in a real browser: the strategy's form, a validation error that keeps the input, create, start."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from tests.e2e.conftest import browser_login
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
    page.get_by_role("link", name="DCA with take-profit").click()
    expect(page.locator("legend", has_text="DCA with take-profit parameters")).to_be_visible()
    page.locator("input[name=name]").fill("Weekly DCA")
    page.locator("input[name=symbols]").fill("ETH/USDT, FAKE/USDT")
    for name, value in {
        "max_order_notional": "100",
        "max_position_notional": "1000",
        "daily_loss_limit": "50",
        "max_drawdown_pct": "5",
        "param_quote_per_buy": "25",
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
