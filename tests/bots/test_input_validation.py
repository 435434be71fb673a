"""Hostile input to the bot forms: a clear form error (or a 400), never a 500, and nothing saved."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

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


@pytest.fixture
def account(new_key: Callable[..., Key]) -> ExchangeAccount:
    acct, _ = exchange_account_create(
        label="Input account",
        exchange_id="sandbox",
        credentials=new_key().form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return acct


def grid_form(acct: ExchangeAccount, **overrides: str) -> dict[str, str]:
    data = {
        "name": "Grid one",
        "account": str(acct.pk),
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
        "grid-lower": "20000",
        "grid-upper": "40000",
        "grid-levels": "10",
        "grid-order_amount": "0.001",
    }
    return {**data, **overrides}


PLAIN = "Enter a plain number such as 12.5"
HOSTILE = [
    ({"max_drawdown_pct": "1000"}, "Enter a value between 0 and 100 %"),
    ({"max_drawdown_pct": "0"}, "Enter a value between 0 and 100 % (0 itself is not allowed)"),
    ({"max_drawdown_pct": "100.001"}, "Enter a value between 0 and 100"),
    ({"max_order_notional": "1e13"}, PLAIN),
    ({"max_order_notional": "10000000000000"}, "Enter a value between 0 and 1000000000"),
    ({"max_order_notional": "1000000000.5"}, "Enter a value between 0 and 1000000000"),
    ({"max_order_notional": "NaN"}, PLAIN),
    ({"max_order_notional": "Infinity"}, PLAIN),
    ({"max_order_notional": "-Infinity"}, PLAIN),
    ({"max_order_notional": "-0"}, "Enter a value between 0 and 1000000000"),
    ({"max_order_notional": "5E+2"}, PLAIN),
    ({"max_order_notional": "0.000000001"}, "no more than 8 decimal places"),
    ({"daily_loss_limit": "١٢"}, PLAIN),  # Arabic-Indic digits: a number to Python, not to us
    ({"paper_balance": "1e13"}, PLAIN),
    ({"size_anomaly_factor": "99999"}, "Enter a value between 1 and 1000"),
    ({"size_anomaly_factor": "0.5"}, "Enter a value between 1 and 1000"),
    ({"tick_interval_s": "99999999999999999999999"}, "Enter a whole number (digits only) between 1 and 86400"),
    ({"tick_interval_s": "1e3"}, "Enter a whole number (digits only)"),
    ({"tick_interval_s": "0"}, "Enter a value between 1 and 86400 seconds"),
    ({"max_open_orders": "-1"}, "Enter a value between 1 and 1000"),
    ({"max_orders_per_minute": "100000"}, "Enter a value between 1 and 600"),
    ({"grid-lower": "1e30"}, PLAIN),
    ({"grid-upper": "99999999999"}, "Enter a value between 0.00000001 and 1000000000"),
    ({"grid-levels": "9" * 30}, "Enter a whole number (digits only) between 2 and 200"),
    ({"grid-order_amount": "NaN"}, PLAIN),
    ({"name": "bad\x00name"}, "Null characters are not allowed"),
    ({"name": "bell\x07"}, "Remove the control character(s) (U+0007)"),
    ({"name": "line\nbreak"}, "Remove the control character(s) (U+000A)"),
    ({"name": "csi\x9b"}, "Remove the control character(s) (U+009B)"),
    ({"name": "evil\u202egnp.exe"}, "Remove the text-direction control character(s) (U+202E)"),
    ({"name": "isolate\u2066x\u2069"}, "U+2066, U+2069"),
    ({"name": "n" * 10000}, "at most 100 characters"),
    ({"symbols": "BTC/USDT\x00"}, "Null characters are not allowed"),
    ({"symbols": ", ".join(f"C{i}/USDT" for i in range(21))}, "Give at most 20 symbols"),
    ({"symbols": "BTC/USDT, ../../etc/passwd"}, "Write each symbol as BASE/QUOTE"),
    ({"symbols": "BTC/USDT' OR 1=1 --"}, "Write each symbol as BASE/QUOTE"),
    ({"symbols": "s" * 10000}, "at most 500 characters"),
    ({"account": "1 OR 1=1"}, "is not a valid UUID"),
    ({"account": "../../"}, "is not a valid UUID"),
    ({"host": "a\x00"}, "Select a valid choice"),
]


@pytest.mark.parametrize(("overrides", "error"), HOSTILE)
def test_it_refuses_hostile_bot_input_with_a_form_error_and_saves_nothing(
    logged_in: LoggedIn, account: ExchangeAccount, overrides: dict[str, str], error: str
) -> None:
    client, _ = logged_in("operator")
    audit_before = AuditEntry.objects.count()
    response = client.post("/bots/new/?strategy=grid", grid_form(account, **overrides))
    body = response.content.decode()
    assert response.status_code == 400, body[:2000]
    assert error.replace("'", "&#x27;") in body, body[body.find('role="alert"') - 300 :][:3000]
    assert not Bot.objects.exists() and AuditEntry.objects.count() == audit_before


@pytest.mark.parametrize(("overrides", "error"), HOSTILE[:12])
def test_it_refuses_hostile_numbers_in_an_edit_and_changes_nothing(
    logged_in: LoggedIn, account: ExchangeAccount, overrides: dict[str, str], error: str
) -> None:
    client, _ = logged_in("operator")
    assert client.post("/bots/new/?strategy=grid", grid_form(account)).status_code == 302
    bot = Bot.objects.get()
    before, audit_before = model_to_dict(bot), AuditEntry.objects.count()
    response = client.post(f"/bots/{bot.pk}/edit/?strategy=grid", grid_form(account, **overrides))
    assert response.status_code == 400 and error.replace("'", "&#x27;") in response.content.decode()
    assert model_to_dict(Bot.objects.get()) == before and AuditEntry.objects.count() == audit_before


def test_the_highest_values_of_each_range_are_accepted(logged_in: LoggedIn, account: ExchangeAccount) -> None:
    client, _ = logged_in("operator")
    edges = grid_form(
        account,
        max_drawdown_pct="100",
        max_order_notional="1000000000",
        paper_balance="0.00000001",
        size_anomaly_factor="1000",
        tick_interval_s="86400",
        max_orders_per_minute="600",
        max_open_orders="1000",
    )
    response = client.post("/bots/new/?strategy=grid", edges)
    assert response.status_code == 302, response.content.decode()[:3000]
    bot = Bot.objects.get()
    assert bot.max_drawdown_pct == Decimal(100) and bot.max_order_notional == Decimal(1000000000)


@pytest.mark.parametrize("key", ["nope", "GRID", "grid\x00", "../grid", "1 OR 1=1", "g" * 5000])
def test_it_answers_400_to_an_unknown_strategy(logged_in: LoggedIn, account: ExchangeAccount, key: str) -> None:
    client, _ = logged_in("operator")
    assert client.post("/bots/new/?strategy=grid", grid_form(account)).status_code == 302
    bot = Bot.objects.get()
    before = model_to_dict(bot)
    for response in (
        client.get("/bots/new/", {"strategy": key}),
        client.post(f"/bots/new/?{_query(key)}", grid_form(account, name="Other")),
        client.get(f"/bots/{bot.pk}/edit/", {"strategy": key}),
        client.post(f"/bots/{bot.pk}/edit/?{_query(key)}", grid_form(account, max_order_notional="1")),
    ):
        body = response.content.decode()
        assert response.status_code == 400 and "There is no such strategy. Choose one of: grid, dca, ma_cross." in body
    assert Bot.objects.count() == 1 and model_to_dict(Bot.objects.get()) == before


def _query(key: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"strategy": key})


def test_a_known_strategy_still_opens_its_form(logged_in: LoggedIn) -> None:
    client, _ = logged_in("operator")
    assert client.get("/bots/new/").status_code == 200
    assert 'name="dca-take_profit_pct"' in client.get("/bots/new/?strategy=dca").content.decode()


@pytest.mark.parametrize("bot_id", ["99999999999999999999999", str(2**63), str(2**31)])
def test_a_bot_id_beyond_the_column_is_a_404(logged_in: LoggedIn, bot_id: str) -> None:
    client, _ = logged_in("operator")
    for path in ("", "edit/"):
        assert client.get(f"/bots/{bot_id}/{path}").status_code == 404
    assert client.post(f"/bots/{bot_id}/stop/").status_code == 404
