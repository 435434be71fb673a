"""The bot form refuses a strategy configuration its own risk limits would refuse at the order gate, with the
numbers in the message, and changes nothing; a configuration that fits is saved."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.forms.models import model_to_dict
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.selectors import exchange_symbols
from apps.exchanges.services import exchange_account_create
from apps.sandbox.state import DEFAULT_RATE_LIMIT
from tests.fixtures.sandbox import SandboxProcess
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]
LIMITS = {
    "name": "Checked bot",
    "symbols": "BTC/USDT",
    "tick_interval_s": "5",
    "paper_balance": "10000",
    "max_order_notional": "500",
    "max_position_notional": "2000",
    "max_open_orders": "20",
    "max_orders_per_minute": "30",
    "daily_loss_limit": "200",
    "max_drawdown_pct": "10",
    "size_anomaly_factor": "10",
}
PARAMS = {
    "grid": {"grid-lower": "20000", "grid-upper": "40000", "grid-levels": "10", "grid-order_amount": "0.001"},
    "dca": {"dca-quote_per_buy": "50", "dca-every_ticks": "10", "dca-take_profit_pct": "2"},
    "ma_cross": {"ma_cross-fast": "9", "ma_cross-slow": "21", "ma_cross-order_amount": "0.001"},
}


@pytest.fixture
def account(new_key: Callable[..., Key]) -> ExchangeAccount:
    acct, _ = exchange_account_create(
        label="Checks account",
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return acct


def form(acct: ExchangeAccount, strategy: str, **overrides: str) -> dict[str, str]:
    return {**LIMITS, "account": str(acct.pk), **PARAMS[strategy], **overrides}


def refused(client: Client, url: str, data: dict[str, str], message: str) -> None:
    response = client.post(url, data)
    body = response.content.decode()
    assert response.status_code == 400, body[:2000]
    assert message in body, body[body.find('class="error') - 200 :][:3000]


REFUSALS = [
    ("dca", {"max_order_notional": "10"}, "DCA buy 50 USDT is above the max order notional 10 USDT."),
    ("dca", {"max_position_notional": "20"}, "DCA buy 50 USDT is above the max position notional 20 USDT."),
    (
        "grid",
        {"max_order_notional": "30"},
        "Grid order 0.001 BTC x 40000 USDT (its top level) = 40 USDT is above the max order notional 30 USDT.",
    ),
    (
        "grid",
        {"max_position_notional": "200"},
        "A full grid (10 levels of 0.001 BTC, 20000 to 40000 USDT) = 300 USDT is above the max position notional "
        "200 USDT.",
    ),
    (
        "grid",
        {"grid-levels": "30"},
        "A grid of 30 levels places up to 30 orders at once, more than the max open orders 20.",
    ),
    (
        "grid",
        {"grid-levels": "40", "max_open_orders": "50"},
        "A grid of 40 levels places up to 40 orders at once, more than the max orders per minute 30.",
    ),
    (
        "ma_cross",
        {"max_order_notional": "50"},
        "Crossover buy 0.001 BTC x 60000 USDT (the current price of BTC/USDT) = 60 USDT is above the max order "
        "notional 50 USDT.",
    ),
    (
        "ma_cross",
        {"max_position_notional": "59.99"},
        "Crossover buy 0.001 BTC x 60000 USDT (the current price of BTC/USDT) = 60 USDT is above the max position "
        "notional 59.99 USDT.",
    ),
    (
        "ma_cross",
        {"ma_cross-slow": "1000"},
        "A slow window of 1000 needs 1001 candles; a tick reads at most 1000, so the bot would never trade.",
    ),
]


@pytest.mark.usefixtures("pinned_price")
@pytest.mark.parametrize(("strategy", "overrides", "message"), REFUSALS)
def test_it_refuses_a_configuration_its_limits_would_refuse_and_saves_nothing(
    logged_in: LoggedIn, account: ExchangeAccount, strategy: str, overrides: dict[str, str], message: str
) -> None:
    client, _ = logged_in("operator")
    audit_before = AuditEntry.objects.count()
    refused(client, f"/bots/new/?strategy={strategy}", form(account, strategy, **overrides), message)
    assert not Bot.objects.exists() and AuditEntry.objects.count() == audit_before


@pytest.mark.usefixtures("pinned_price")
@pytest.mark.parametrize("strategy", ["grid", "dca", "ma_cross"])
def test_a_configuration_that_fits_its_limits_is_saved(
    logged_in: LoggedIn, account: ExchangeAccount, strategy: str
) -> None:
    client, _ = logged_in("operator")
    # At the edge: every figure equals its limit (60 USDT is the crossover buy at 60000).
    edge = {
        "grid": {"max_order_notional": "40", "max_position_notional": "300", "max_open_orders": "10"},
        "dca": {"max_order_notional": "50", "max_position_notional": "50"},
        "ma_cross": {"max_order_notional": "60", "max_position_notional": "60", "ma_cross-slow": "999"},
    }[strategy]
    response = client.post(f"/bots/new/?strategy={strategy}", form(account, strategy, **edge))
    assert response.status_code == 302, response.content.decode()[:3000]
    bot = Bot.objects.get()
    assert bot.strategy == strategy and bot.max_order_notional == Decimal(edge["max_order_notional"])
    assert AuditEntry.objects.filter(action="bot.created", target_id=str(bot.pk)).exists()


@pytest.fixture
def unreadable_prices(sandbox: SandboxProcess, settings: Any) -> Iterator[None]:
    """Public market data answers 429 (one request a minute) and the port tries once: the price cannot be read."""
    settings.EXCHANGE_RETRIES = 0
    sandbox.admin.set_rate_limit(1)
    try:
        yield
    finally:
        sandbox.admin.set_rate_limit(DEFAULT_RATE_LIMIT)


def test_it_refuses_when_the_price_cannot_be_read_rather_than_save_unchecked(
    logged_in: LoggedIn, account: ExchangeAccount, request: pytest.FixtureRequest
) -> None:
    client, _ = logged_in("operator")
    exchange_symbols(account)  # the symbols are known (cached): only the price is missing below
    request.getfixturevalue("unreadable_prices")
    audit_before = AuditEntry.objects.count()
    refused(
        client,
        "/bots/new/?strategy=ma_cross",
        form(account, "ma_cross"),
        "Could not read the price of BTC/USDT to check the order size; try again",
    )
    assert not Bot.objects.exists() and AuditEntry.objects.count() == audit_before


def test_the_edit_form_refuses_too_and_changes_nothing(logged_in: LoggedIn, account: ExchangeAccount) -> None:
    client, _ = logged_in("operator")
    assert client.post("/bots/new/?strategy=grid", form(account, "grid")).status_code == 302
    bot = Bot.objects.get()
    before, audit_before = model_to_dict(bot), AuditEntry.objects.count()
    url = f"/bots/{bot.pk}/edit/?strategy=grid"
    refused(
        client,
        url,
        form(account, "grid", **{"grid-order_amount": "0.01"}),
        "A full grid (10 levels of 0.01 BTC, 20000 to 40000 USDT) = 3000 USDT is above the max position notional "
        "2000 USDT.",
    )
    # Raising a limit that still does not fit is refused as well.
    refused(
        client,
        url,
        form(account, "grid", max_order_notional="30", **{"grid-levels": "25"}),
        "A grid of 25 levels places up to 25 orders at once, more than the max open orders 20.",
    )
    # Another strategy with the same limits: the DCA buy is above the max order notional.
    refused(
        client,
        f"/bots/{bot.pk}/edit/?strategy=dca",
        form(account, "dca", max_order_notional="10"),
        "DCA buy 50 USDT is above the max order notional 10 USDT.",
    )
    assert model_to_dict(Bot.objects.get()) == before and AuditEntry.objects.count() == audit_before


def test_an_edit_that_only_lowers_a_limit_is_saved_but_not_one_that_also_changes_the_grid(
    logged_in: LoggedIn, account: ExchangeAccount
) -> None:
    client, _ = logged_in("operator")
    assert client.post("/bots/new/?strategy=grid", form(account, "grid")).status_code == 302
    bot = Bot.objects.get()
    url = f"/bots/{bot.pk}/edit/?strategy=grid"
    # Lowering limits below what the grid asks is a risk reduction: the gate enforces it on the next order.
    lowered = form(account, "grid", max_open_orders="5", max_order_notional="30", max_position_notional="200")
    response = client.post(url, lowered)
    assert response.status_code == 302, response.content.decode()[:3000]
    bot.refresh_from_db()
    assert (bot.max_open_orders, bot.max_order_notional, bot.max_position_notional) == (5, Decimal(30), Decimal(200))
    # The same limits with other grid parameters are a new configuration: checked, refused, nothing changes.
    before = model_to_dict(bot)
    refused(
        client,
        url,
        {**lowered, "grid-levels": "8"},
        "A grid of 8 levels places up to 8 orders at once, more than the max open orders 5.",
    )
    assert model_to_dict(Bot.objects.get()) == before
