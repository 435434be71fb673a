"""The bot page as the server renders it: the refusal warning, the tables the live script keeps current."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from apps.bots.models import Bot
from apps.events.models import Event
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.strategies.base import OrderIntent
from apps.trading.gate import gate_check
from apps.trading.ledger import fill_record
from apps.trading.models import GateRefusal, Order
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]


@pytest.fixture
def bot(new_key: Callable[..., Key]) -> Bot:
    account: ExchangeAccount
    account, _ = exchange_account_create(
        label="Page account",
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return Bot.objects.create(
        name="Page bot",
        account=account,
        strategy="grid",
        params={},
        symbols=["BTC/USDT"],
        desired_state="running",  # the gate refuses a stopped bot before it looks at the limits
        max_order_notional=Decimal("10"),
        max_position_notional=Decimal("1000"),
        daily_loss_limit=Decimal("100"),
        max_drawdown_pct=Decimal("10"),
    )


def refusal(bot: Bot, message: str, age: timedelta) -> GateRefusal:
    return GateRefusal.objects.create(
        bot=bot,
        symbol="BTC/USDT",
        side="buy",
        amount=Decimal("1"),
        reason="max_order_notional",
        message=message,
        created_at=timezone.now() - age,
    )


def warning_of(page: str) -> str:
    start = page.index('id="refusal-warning"')
    return page[start : page.index("</div>", start)]


def test_a_refusal_by_the_gate_shows_as_a_warning_at_the_top_and_is_published_live(
    logged_in: LoggedIn, bot: Bot
) -> None:
    intent = OrderIntent("BTC/USDT", "buy", "limit", Decimal("50"), Decimal("1"), "too-big")
    decision = gate_check(bot=bot, intent=intent, price=Decimal("1"))
    assert not decision.allowed and decision.message == "Order notional 50.00 exceeds the limit 10.00."
    event = Event.objects.get(kind="gate_refusal", bot=bot)
    assert event.payload["message"] == "Order notional 50.00 exceeds the limit 10.00."

    client, _ = logged_in("viewer")
    page = client.get(f"/bots/{bot.pk}/").content.decode()
    warning = warning_of(page)
    assert "Orders refused:" in warning and "Order notional 50.00 exceeds the limit 10.00." in warning
    assert "hidden" not in warning.split(">", 1)[0] and 'role="alert"' in warning
    assert page.index('id="refusal-warning"') < page.index("<h2>Open orders</h2>")  # at the top


def test_the_warning_holds_only_the_newest_refusals_of_the_last_minutes(logged_in: LoggedIn, bot: Bot) -> None:
    refusal(bot, "an old refusal", timedelta(minutes=20))
    for n in range(5):
        refusal(bot, f"recent refusal {n}", timedelta(seconds=60 - n))
    client, _ = logged_in("viewer")
    page = client.get(f"/bots/{bot.pk}/").content.decode()
    warning = warning_of(page)
    # The newest three, newest first; the old one only in the table below.
    assert [f"recent refusal {n}" in warning for n in range(5)] == [False, False, True, True, True]
    assert warning.index("recent refusal 4") < warning.index("recent refusal 2")
    assert "an old refusal" not in warning and "an old refusal" in page


def test_no_recent_refusal_no_warning(logged_in: LoggedIn, bot: Bot) -> None:
    refusal(bot, "an old refusal", timedelta(minutes=20))
    client, _ = logged_in("viewer")
    warning = warning_of(client.get(f"/bots/{bot.pk}/").content.decode())
    assert " hidden>" in warning and "<li" not in warning


def test_the_tables_carry_what_the_live_script_updates_and_the_script_is_loaded(logged_in: LoggedIn, bot: Bot) -> None:
    order = Order.objects.create(
        bot=bot,
        account=bot.account,
        symbol="BTC/USDT",
        side="buy",
        type="limit",
        amount=Decimal("0.5"),
        price=Decimal("2"),
        client_order_id="bc-page-1",
        intent_tag="test",
        status="open",
    )
    fill_record(
        order=order,
        trade_id="t-1",
        price=Decimal("2"),
        amount=Decimal("0.25"),
        fee=Decimal("0"),
        fee_currency="USDT",
        timestamp=timezone.now(),
    )
    client, _ = logged_in("viewer")
    page = client.get(f"/bots/{bot.pk}/").content.decode()
    assert f'<tr data-order="{order.pk}">' in page and '<td data-field="status">Open</td>' in page
    # At the market's decimals when this process has loaded the sandbox's markets, else plainly.
    assert '<tr data-symbol="BTC/USDT">' in page
    assert re.search(r'<td class="num" data-field="held">0\.25(000)?</td>', page)
    assert 'id="fills"' in page and 'id="refusals"' in page
    assert 'src="/static/js/bot_page.js"' in page and "<script>" not in page  # no inline script
    # The fill's live event carries the position after it, for the positions table.
    event = Event.objects.get(kind="fill", bot=bot)
    assert event.payload["position"] == "0.25" and event.payload["position_average_entry"] == "2"
    assert event.payload["position_realized"] == "0"


def test_an_anonymous_user_is_sent_to_log_in(bot: Bot) -> None:
    response = Client().get(f"/bots/{bot.pk}/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_strategy_line_names_its_parameters_or_says_it_runs_on_its_defaults(logged_in: LoggedIn, bot: Bot) -> None:
    client, _ = logged_in("viewer")
    assert "<dd>Grid (its defaults)</dd>" in client.get(f"/bots/{bot.pk}/").content.decode()  # params={}
    Bot.objects.filter(pk=bot.pk).update(params={"levels": 4})
    assert "<dd>Grid: levels=4</dd>" in client.get(f"/bots/{bot.pk}/").content.decode()
