"""The bot form in a real browser: the market beside the fields and values fitted to it, a strategy switch that
keeps what was typed, an error summary that takes the focus and leads to each field, and the preview of a first
tick. Screenshots at 1366 and 390 px wide go to the run's screens/forms/ folder."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from tests.e2e.conftest import browser_login, shots_dir
from tests.fixtures.sandbox import SandboxProcess
from tests.keys import Key
from tests.people import make_person

SHOTS = shots_dir("forms")


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width in (("1366", 1366), ("390", 390)):
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size({"width": 1366, "height": 900})


@pytest.mark.usefixtures("pinned_price")
def test_the_bot_form_shows_the_market_keeps_typed_values_leads_to_errors_and_previews(
    live_server: LiveServer, page: Page, new_key: Callable[..., Key], sandbox: SandboxProcess
) -> None:
    base = live_server.url
    key = new_key()
    exchange_account_create(
        label="Sandbox",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    who = make_person("olga", "operator")
    browser_login(page, base, "olga", who.code())
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{base}/bots/new/")
    field = page.locator

    # The symbol brings the market beside the fields and a grid around its price.
    field("#id_name").fill("Helped grid")
    field("#id_symbols").fill("BTC/USDT")
    expect(field("[data-market-hint=summary]")).to_contain_text("BTC/USDT on sandbox: 1 BTC = 60000 USDT now.")
    expect(field("[data-market-hint=summary]")).to_contain_text("at least 0.00001 BTC and worth at least 5 USDT")
    expect(field("#id_grid-lower")).to_have_value("54000")
    expect(field("#id_grid-upper")).to_have_value("66000")
    amount_help = field("#id_grid-order_amount_helptext")
    expect(amount_help).to_contain_text("The exchange takes at least 0.00001 BTC and worth at least 5 USDT")
    expect(field("#id_grid-lower_helptext")).to_contain_text("prices go in ticks of 0.01")

    # A typed value stays through a strategy switch and a change of market; an untouched one follows the market.
    field("#id_grid-lower").fill("55000")
    page.get_by_role("button", name="DCA with take-profit").click()
    expect(page.locator("legend", has_text="DCA with take-profit parameters")).to_be_visible()
    expect(field("#id_grid-lower")).to_be_hidden()
    field("#id_dca-quote_per_buy").fill("30")
    page.get_by_role("button", name="Grid", exact=True).click()
    expect(field("#id_grid-lower")).to_have_value("55000")
    expect(field("#id_name")).to_have_value("Helped grid")
    field("#id_symbols").fill("ETH/USDT")
    expect(field("[data-market-hint=summary]")).to_contain_text("ETH/USDT on sandbox")
    expect(field("#id_grid-upper")).not_to_have_value("66000")
    expect(field("#id_grid-lower")).to_have_value("55000")
    field("#id_symbols").fill("BTC/USDT")
    expect(field("#id_grid-upper")).to_have_value("66000")
    shoot(page, "bot-form-market")

    # Save with the risk limits left empty: the summary takes the focus and leads to each field.
    page.get_by_role("button", name="Save").click()
    summary = field("[data-error-summary]")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Nothing was saved: 4 problems to fix.")
    links = summary.locator("a")
    expect(links).to_have_count(4)
    expect(links.first).to_have_attribute("href", "#id_max_order_notional")
    for name in ("max_order_notional", "max_position_notional", "daily_loss_limit", "max_drawdown_pct"):
        expect(field(f"#id_{name}")).to_have_attribute("aria-invalid", "true")
        expect(field(f"#id_{name}")).to_have_attribute("aria-describedby", re.compile(rf"(^| )id_{name}_error$"))
        expect(field(f"#id_{name}_error")).to_contain_text("This field is required.")
    expect(field("#id_name")).not_to_have_attribute("aria-invalid", "true")
    expect(field("#id_grid-lower")).to_have_value("55000")  # nothing typed is lost, in any strategy
    expect(field("#id_dca-quote_per_buy")).to_have_value("30")
    expect(field("#id_dca-quote_per_buy")).to_be_disabled()  # hidden with its strategy, and not checked
    shoot(page, "bot-form-errors")
    summary.get_by_role("link", name="Daily loss limit (quote): This field is required.").click()
    expect(field("#id_daily_loss_limit")).to_be_focused()

    # The preview asks the grid's decide(): five buys below 60000, placed nowhere.
    orders_before = sandbox.admin.order_count().total
    for name, value in {
        "max_order_notional": "100",
        "max_position_notional": "1000",
        "daily_loss_limit": "50",
        "max_drawdown_pct": "10",
    }.items():
        field(f"#id_{name}").fill(value)
    page.get_by_role("button", name="Preview the first tick").click()
    preview = field("#preview")
    expect(preview).to_be_focused()
    rows = preview.locator("tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.first).to_contain_text("buy")
    expect(rows.first).to_contain_text("55000")
    expect(rows.first).to_contain_text("Placed")
    expect(preview).to_contain_text("Nothing was placed or saved.")
    shoot(page, "bot-form-preview")
    assert sandbox.admin.order_count().total == orders_before and not Bot.objects.exists()

    page.get_by_role("button", name="Save").click()
    expect(page.locator("h1")).to_have_text("Helped grid")
    bot = Bot.objects.get()
    assert bot.params["lower"] == "55000" and bot.params["upper"] == "66000" and bot.symbols == ["BTC/USDT"]
