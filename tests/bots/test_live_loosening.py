"""Loosening a live bot is an admin's act with a fresh code; an operator may only tighten it.

Each refusal is checked on the database (the bot's stored row) and the audit log (no bot.updated).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.forms.models import model_to_dict
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]


def _account(new_key: Callable[..., Key], label: str) -> ExchangeAccount:
    acct, _ = exchange_account_create(
        label=label,
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return acct


@pytest.fixture
def accounts(new_key: Callable[..., Key]) -> tuple[ExchangeAccount, ExchangeAccount]:
    return _account(new_key, "Live main"), _account(new_key, "Live other")


@pytest.fixture
def live_bot(accounts: tuple[ExchangeAccount, ExchangeAccount]) -> Bot:
    return Bot.objects.create(
        name="Live grid",
        account=accounts[0],
        strategy="grid",
        mode=Bot.Mode.LIVE,
        symbols=["BTC/USDT"],
        params={"lower": "20000", "upper": "40000", "levels": 10, "order_amount": "0.001"},
        tick_interval_s=5,
        max_order_notional=Decimal("500"),
        max_position_notional=Decimal("2000"),
        max_open_orders=20,
        max_orders_per_minute=30,
        daily_loss_limit=Decimal("200"),
        max_drawdown_pct=Decimal("10"),
        size_anomaly_factor=Decimal("10"),
    )


def form_of(bot: Bot, **overrides: str) -> dict[str, str]:
    """The edit form as the page fills it in for `bot`, with `overrides` typed over it."""
    data = {
        "name": bot.name,
        "account": str(bot.account_id),
        "symbols": ", ".join(bot.symbols),
        "tick_interval_s": str(bot.tick_interval_s),
        "paper_balance": "10000",
        "max_order_notional": "500",
        "max_position_notional": "2000",
        "max_open_orders": "20",
        "max_orders_per_minute": "30",
        "daily_loss_limit": "200",
        "max_drawdown_pct": "10",
        "size_anomaly_factor": "10",
        "host": bot.host,
        "grid-lower": "20000",
        "grid-upper": "40000",
        "grid-levels": "10",
        "grid-order_amount": "0.001",
    }
    return {**data, **overrides}


def stored(bot: Bot) -> dict[str, Any]:
    return model_to_dict(Bot.objects.get(pk=bot.pk))


def edit_url(bot: Bot) -> str:
    return f"/bots/{bot.pk}/edit/?strategy=grid"


LOOSENINGS = [
    ({"max_order_notional": "999999999"}, "max order size"),
    ({"max_position_notional": "5000"}, "max position"),
    ({"max_open_orders": "21"}, "max open orders"),
    ({"max_orders_per_minute": "60"}, "orders per minute"),
    ({"daily_loss_limit": "200.5"}, "daily loss limit"),
    ({"max_drawdown_pct": "100"}, "max drawdown"),
    ({"size_anomaly_factor": "11"}, "size anomaly factor"),
    ({"symbols": "BTC/USDT, ETH/USDT"}, "new symbols"),
    ({"tick_interval_s": "1"}, "faster ticks"),
    ({"grid-order_amount": "0.002"}, "strategy parameters"),
]


@pytest.mark.parametrize(("overrides", "named"), LOOSENINGS)
def test_it_refuses_an_operator_who_loosens_a_live_bot_and_changes_nothing(
    logged_in: LoggedIn, live_bot: Bot, overrides: dict[str, str], named: str
) -> None:
    client, _ = logged_in("operator")
    before = stored(live_bot)
    response = client.post(edit_url(live_bot), form_of(live_bot, **overrides))
    body = response.content.decode()
    assert response.status_code == 403, body[:2000]
    assert "Only an admin can loosen a live bot" in body and named in body
    assert stored(live_bot) == before
    assert not AuditEntry.objects.filter(action="bot.updated").exists()


def test_it_refuses_an_operator_who_moves_a_live_bot_to_another_account(
    logged_in: LoggedIn, live_bot: Bot, accounts: tuple[ExchangeAccount, ExchangeAccount]
) -> None:
    client, _ = logged_in("operator")
    before = stored(live_bot)
    response = client.post(edit_url(live_bot), form_of(live_bot, account=str(accounts[1].pk)))
    assert response.status_code == 403 and "exchange account" in response.content.decode()
    assert stored(live_bot) == before and Bot.objects.get(pk=live_bot.pk).account_id == accounts[0].pk
    assert not AuditEntry.objects.filter(action="bot.updated").exists()


def test_it_refuses_the_whole_edit_when_it_tightens_one_limit_and_loosens_another(
    logged_in: LoggedIn, live_bot: Bot
) -> None:
    client, _ = logged_in("operator")
    before = stored(live_bot)
    response = client.post(edit_url(live_bot), form_of(live_bot, max_order_notional="100", max_drawdown_pct="50"))
    assert response.status_code == 403 and "max drawdown" in response.content.decode()
    assert stored(live_bot) == before


def test_an_operator_tightens_a_live_bot_saved_and_audited(logged_in: LoggedIn, live_bot: Bot) -> None:
    client, _ = logged_in("operator")
    tighter = form_of(
        live_bot,
        max_order_notional="250",
        max_position_notional="1000",
        max_open_orders="5",
        max_orders_per_minute="10",
        daily_loss_limit="50",
        max_drawdown_pct="5",
        size_anomaly_factor="3",
        tick_interval_s="10",
        name="Live grid (careful)",
    )
    response = client.post(edit_url(live_bot), tighter)
    assert response.status_code == 302, response.content.decode()[:2000]
    bot = Bot.objects.get(pk=live_bot.pk)
    assert (bot.max_order_notional, bot.max_drawdown_pct, bot.max_open_orders) == (Decimal(250), Decimal(5), 5)
    assert bot.mode == Bot.Mode.LIVE
    entry = AuditEntry.objects.get(action="bot.updated")
    assert entry.data["before"]["max_order_notional"] == "500.00000000"
    assert entry.data["after"]["max_order_notional"] == "250.00000000"
    assert entry.data["after"]["name"] == "Live grid (careful)" and "loosened" not in entry.data


def test_an_operator_removes_a_symbol_from_a_live_bot(logged_in: LoggedIn, live_bot: Bot) -> None:
    Bot.objects.filter(pk=live_bot.pk).update(symbols=["BTC/USDT", "ETH/USDT"])
    client, _ = logged_in("operator")
    response = client.post(edit_url(live_bot), form_of(live_bot, symbols="ETH/USDT"))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Bot.objects.get(pk=live_bot.pk).symbols == ["ETH/USDT"]


def test_an_operator_edits_a_paper_bot_freely(
    logged_in: LoggedIn, live_bot: Bot, accounts: tuple[ExchangeAccount, ExchangeAccount]
) -> None:
    Bot.objects.filter(pk=live_bot.pk).update(mode=Bot.Mode.PAPER)
    client, _ = logged_in("operator")
    looser = form_of(live_bot, max_order_notional="5000", max_drawdown_pct="50", account=str(accounts[1].pk))
    assert client.post(edit_url(live_bot), looser).status_code == 302
    bot = Bot.objects.get(pk=live_bot.pk)
    assert bot.max_order_notional == Decimal(5000) and bot.account_id == accounts[1].pk


def test_an_admin_without_a_fresh_code_is_sent_to_step_up_and_nothing_changes(
    logged_in: LoggedIn, live_bot: Bot
) -> None:
    client, _ = logged_in("admin")  # logged in with a code, but no step-up for this
    before = stored(live_bot)
    response = client.post(edit_url(live_bot), form_of(live_bot, max_order_notional="750"))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/step-up/")
    assert stored(live_bot) == before
    assert not AuditEntry.objects.filter(action="bot.updated").exists()


def test_an_admin_with_a_fresh_code_loosens_a_live_bot_audited_with_before_and_after(
    logged_in: LoggedIn, live_bot: Bot, accounts: tuple[ExchangeAccount, ExchangeAccount]
) -> None:
    client, who = logged_in("admin")
    looser = form_of(live_bot, max_order_notional="750", max_drawdown_pct="20", account=str(accounts[1].pk))
    # Sent to step-up first; back on the form, the edit is filled in again (not saved) ...
    step_up = client.post(edit_url(live_bot), looser)["Location"]
    assert Bot.objects.get(pk=live_bot.pk).max_order_notional == Decimal(500)
    back = client.post("/accounts/step-up/", {"code": who.code(1), "next": edit_url(live_bot)})
    assert back.status_code == 302 and back["Location"] == edit_url(live_bot), step_up
    page = client.get(back["Location"]).content.decode()
    assert 'value="750"' in page and "filled in again" in page
    # ... and saving it now, with the fresh code, applies and audits it.
    response = client.post(edit_url(live_bot), looser)
    assert response.status_code == 302 and response["Location"] == f"/bots/{live_bot.pk}/"
    bot = Bot.objects.get(pk=live_bot.pk)
    assert (bot.max_order_notional, bot.max_drawdown_pct, bot.account_id) == (Decimal(750), Decimal(20), accounts[1].pk)
    entry = AuditEntry.objects.get(action="bot.updated")
    assert entry.actor == who.user.username and entry.otp_verified
    assert entry.data["before"] == {
        "account": str(accounts[0].pk),
        "max_drawdown_pct": "10.00",
        "max_order_notional": "500.00000000",
    }
    assert entry.data["after"] == {
        "account": str(accounts[1].pk),
        "max_drawdown_pct": "20.00",
        "max_order_notional": "750.00000000",
    }
    assert entry.data["loosened"] == ["account", "max_order_notional", "max_drawdown_pct"]


def test_a_viewer_and_an_anonymous_user_cannot_edit_a_live_bot(logged_in: LoggedIn, live_bot: Bot) -> None:
    before = stored(live_bot)
    viewer, _ = logged_in("viewer")
    assert viewer.post(edit_url(live_bot), form_of(live_bot, max_order_notional="100")).status_code == 403
    anonymous = Client().post(edit_url(live_bot), form_of(live_bot, max_order_notional="100"))
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert stored(live_bot) == before


def test_an_edit_saved_after_a_halt_keeps_the_halt(live_bot: Bot) -> None:
    """The form loaded the bot before the kill switch halted it; saving must not write the old state back."""
    from apps.bots import services
    from apps.bots.forms import BotForm
    from apps.strategies import REGISTRY

    bot = Bot.objects.get(pk=live_bot.pk)
    form = BotForm(form_of(bot, max_order_notional="100"), instance=bot, strategy=REGISTRY["grid"])
    assert form.is_valid(), form.errors
    Bot.objects.filter(pk=bot.pk).update(halted=True, halt_reason="kill switch", desired_state="stopped")
    services.bot_update(bot=form.save(commit=False), actor="system:test")
    after = Bot.objects.get(pk=bot.pk)
    assert after.halted and after.halt_reason == "kill switch" and after.max_order_notional == Decimal(100)
