"""A bot whose worker could not run says why on its page, and stops saying it once the bot runs (live, no reload).

The supervisor's word (the audited `bot.worker_crashed`, here a sealed Vault, as tests/faults/test_openbao.py
provokes for real) is shown beside the bot's state; the bot_state event that reports it running removes it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from apps.audit.services import record
from apps.bots import events as bot_events
from apps.bots.models import Bot
from apps.exchanges.services import exchange_account_create
from tests.e2e.conftest import browser_login
from tests.e2e.test_bot_page_live import shoot
from tests.e2e.test_live import AsgiServer, as_worker, asgi_server  # noqa: F401 - asgi_server is a fixture
from tests.keys import Key
from tests.people import make_person

SEALED = "vault: Vault is sealed (it answers 503 until an operator unseals it)"


@pytest.mark.django_db(transaction=True)
def test_a_bot_that_could_not_start_says_why_until_it_runs(
    asgi_server: AsgiServer,  # noqa: F811 - the fixture imported above
    page: Page,
    new_key: Callable[..., Key],
) -> None:
    account, _ = exchange_account_create(
        label="Start problem",
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    bot = Bot.objects.create(
        name="Grid waiting for Vault",
        account=account,
        strategy="grid",
        symbols=["BTC/USDT"],
        mode="live",
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("5000"),
        daily_loss_limit=Decimal("100"),
        max_drawdown_pct=Decimal("10"),
        desired_state="running",
        observed_state="error",
    )
    record(
        actor="system:fleet",
        action="bot.worker_crashed",
        target=bot,
        data={"reason": SEALED, "failures": 2, "restart_in_s": 2.0},
    )
    who = make_person("vera", "viewer")
    browser_login(page, asgi_server.url, "vera", who.code())
    page.goto(f"{asgi_server.url}/bots/{bot.pk}/")
    expect(page.locator("#live-status")).to_have_text("Live")
    expect(page.locator("#start-problem")).to_contain_text(f"its worker could not run: {SEALED}")
    expect(page.locator("#start-problem")).to_contain_text("the supervisor tries again by itself 2 s later")
    shoot(page, "start-problem")

    def runs() -> None:
        Bot.objects.filter(pk=bot.pk).update(observed_state=Bot.Observed.RUNNING)
        bot_events.bot_state(bot.pk)

    as_worker(runs)
    expect(page.locator("[data-field=state]")).to_have_text("Running")
    expect(page.locator("#start-problem")).to_have_count(0)
