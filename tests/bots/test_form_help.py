"""The bot form helps: the market's price and order rules beside the fields, values fitted to that price, a
strategy switch that keeps what was typed, an error summary that names every invalid field, and a preview of the
orders a first tick would place (asked of the strategy's real decide(), placed nowhere)."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.strategies.base import MarketView, on_step, plain
from apps.strategies.grid import GridStrategy
from apps.trading.models import GateRefusal, Order
from tests.fixtures.sandbox import SandboxProcess
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]
# The sandbox's BTC/USDT rules (apps/sandbox/symbols.py) and the price the pinned_price fixture holds.
PRICE = Decimal(60000)


class Page(HTMLParser):
    """Every element's attributes by id and every form control's by name."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.by_name: dict[str, dict[str, str | None]] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {"tag": tag, **dict(attrs)}
        if found.get("id"):
            self.by_id[str(found["id"])] = found
        if tag in ("input", "select") and found.get("name"):
            self.by_name.setdefault(str(found["name"]), found)


@pytest.fixture
def account(new_key: Callable[..., Key]) -> tuple[ExchangeAccount, Key]:
    key = new_key()
    acct, _ = exchange_account_create(
        label="Helped account",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return acct, key


def bot_data(acct: ExchangeAccount, **fields: str) -> dict[str, str]:
    base = {
        "name": "Helped grid",
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
        "strategy": "grid",
        "grid-lower": "54000",
        "grid-upper": "66000",
        "grid-levels": "10",
        "grid-order_amount": "0.001",
    }
    return {**base, **fields}


@pytest.mark.usefixtures("pinned_price")
def test_the_form_shows_the_market_and_fits_its_defaults_to_the_price(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key]
) -> None:
    client, _ = logged_in("operator")
    acct, _ = account
    response = client.get("/bots/new/", {"account": str(acct.pk), "symbols": "btc/usdt"})
    body = response.content.decode()
    assert response.status_code == 200
    page = Page(body)
    # The grid spans the price 10 % either side (not 20000-40000 while BTC trades at 60000).
    assert page.by_name["grid-lower"]["value"] == "54000" and page.by_name["grid-upper"]["value"] == "66000"
    assert page.by_name["grid-lower"]["data-suggested"] == "54000"
    assert page.by_name["symbols"]["value"] == "BTC/USDT"
    assert (
        "BTC/USDT on sandbox: 1 BTC = 60000 USDT now. Each order: at least 0.00001 BTC and worth at least 5 USDT; "
        "price tick 0.01; amount step 0.00001." in body
    )
    assert "The exchange takes at least 0.00001 BTC and worth at least 5 USDT: 0.00009 BTC or more at 60000." in body
    assert "BTC/USDT is at 60000 USDT now; prices go in ticks of 0.01." in body


@pytest.mark.usefixtures("pinned_price")
def test_the_market_endpoint_answers_the_price_the_rules_and_fitted_values(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key]
) -> None:
    client, _ = logged_in("operator")
    acct, _ = account
    answer = client.get("/bots/market/", {"account": str(acct.pk), "symbol": "BTC/USDT"}).json()
    assert {k: answer[k] for k in ("price", "min_amount", "min_notional", "price_step", "amount_step")} == {
        "price": "60000",
        "min_amount": "0.00001",
        "min_notional": "5",
        "price_step": "0.01",
        "amount_step": "0.00001",
    }
    assert answer["defaults"]["grid-lower"] == "54000" and answer["defaults"]["grid-upper"] == "66000"
    assert answer["texts"]["summary"].startswith("BTC/USDT on sandbox: 1 BTC = 60000 USDT now.")
    # ETH at about 3000: the default 0.001 ETH (3 USDT) is below the 5 USDT minimum, so it is raised to the
    # smallest amount on the step worth the minimum with a 10 % margin.
    eth = client.get("/bots/market/", {"account": str(acct.pk), "symbol": "ETH/USDT"}).json()
    price, step = Decimal(eth["price"]), Decimal(eth["amount_step"])
    for name in ("grid-order_amount", "ma_cross-order_amount"):
        amount = Decimal(eth["defaults"][name])
        low = price * Decimal("0.9") if name.startswith("grid") else price
        assert amount % step == 0 and amount * low >= Decimal("5.5") > (amount - step) * low, (name, amount, price)
    assert Decimal(eth["defaults"]["dca-quote_per_buy"]) == 50


BAD_QUERIES = [
    ({"symbol": "BTC/USDT"}, "`account` is missing."),
    ({"account": "1", "symbol": "BTC/USDT"}, "`account` must be an id"),
    ({"account": "ACCOUNT"}, "`symbol` must be written BASE/QUOTE"),
    ({"account": "ACCOUNT", "symbol": "BTC-USDT\x00"}, "`symbol` must be written BASE/QUOTE"),
    ({"account": "ACCOUNT", "symbol": "FAKE/USDT"}, "FAKE/USDT is not listed on sandbox."),
    ({"account": "0b5cad1e-0000-4000-8000-000000000000", "symbol": "BTC/USDT"}, "There is no such exchange account."),
]


def test_the_market_endpoint_answers_400_to_bad_input(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key]
) -> None:
    client, _ = logged_in("operator")
    for query, message in BAD_QUERIES:
        if query.get("account") == "ACCOUNT":
            query = {**query, "account": str(account[0].pk)}
        response = client.get("/bots/market/", query)
        assert response.status_code == 400 and message in response.json()["error"], (query, response.content)


def test_the_market_endpoint_and_the_preview_are_for_operators(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key]
) -> None:
    query = {"account": str(account[0].pk), "symbol": "BTC/USDT"}
    viewer, _ = logged_in("viewer")
    assert viewer.get("/bots/market/", query).status_code == 403
    assert viewer.post("/bots/new/", bot_data(account[0], preview="1")).status_code == 403
    anonymous = Client().get("/bots/market/", query)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    operator, _ = logged_in("operator")
    assert operator.get("/bots/market/", query).status_code == 200


def _expected_grid_orders(values: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(side, price as sent, amount) of what GridStrategy.decide() proposes for a fresh bot at PRICE."""
    view = MarketView("BTC/USDT", PRICE, (), Decimal(0), None, (), Decimal(10000))
    decision = GridStrategy(values).decide(view, {})
    return [(i.side, plain(on_step(i.price or PRICE, Decimal("0.01"))), plain(i.amount)) for i in decision.intents]


def _preview_rows(body: str) -> list[tuple[str, str, str, str]]:
    table = body[body.index('class="preview-orders"') :]
    cells = [c.strip() for c in re.findall(r'<td data-label="(?:Side|Price|Amount|Outcome)">(.*?)</td>', table, re.S)]
    return [(cells[i], cells[i + 1], cells[i + 2], cells[i + 3]) for i in range(0, len(cells), 4)]


@pytest.mark.usefixtures("pinned_price")
def test_the_preview_shows_the_grid_orders_decide_would_place_and_places_nothing(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key], sandbox: SandboxProcess
) -> None:
    client, _ = logged_in("operator")
    acct, key = account
    orders_before, audit_before = sandbox.admin.order_count().total, AuditEntry.objects.count()
    response = client.post("/bots/new/", bot_data(acct, preview="1"))
    body = response.content.decode()
    assert response.status_code == 200, body[:2000]
    values = GridStrategy.clean({"lower": "54000", "upper": "66000", "levels": "10", "order_amount": "0.001"})
    expected = _expected_grid_orders(values)
    assert len(expected) == 5  # the five levels below 60000, each 54-60 USDT, within the 10000 free
    rows = _preview_rows(body)
    assert [(side, price, amount) for side, price, amount, _ in rows] == expected
    assert all(outcome.startswith("Placed") for *_, outcome in rows)
    assert "(price on the 0.01 tick)" in rows[1][3]  # decide() said 55333.333…; the exchange takes 55333.33
    # Nothing reached the exchange, nothing was stored or audited.
    assert sandbox.admin.order_count().total == orders_before and sandbox.admin.order_count().for_key(key.api_key) == 0
    assert not Bot.objects.exists() and not Order.objects.exists() and not GateRefusal.objects.exists()
    assert AuditEntry.objects.count() == audit_before


@pytest.mark.usefixtures("pinned_price")
def test_the_preview_says_why_the_gate_or_the_exchange_would_refuse_an_order(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key]
) -> None:
    client, _ = logged_in("operator")
    acct, _ = account
    # Three open orders at most: the form refuses the grid, and the preview shows which orders the gate refuses.
    body = client.post("/bots/new/", bot_data(acct, preview="1", max_open_orders="3")).content.decode()
    outcomes = [outcome for *_, outcome in _preview_rows(body)]
    assert [o.startswith("Placed") for o in outcomes] == [True, True, True, False, False]
    assert all("Refused: The bot already has 3 open orders, its limit." in o for o in outcomes[3:])
    assert "more than the max open orders 3" in body  # the form's own refusal, in the summary and by the field
    # Orders of 0.00005 BTC are worth about 3 USDT, below the exchange's 5 USDT minimum.
    body = client.post("/bots/new/", bot_data(acct, preview="1", **{"grid-order_amount": "0.00005"})).content.decode()
    assert "Refused: Worth 2.7 USDT, below BTC/USDT&#x27;s minimum order value 5 USDT." in body
    assert not Bot.objects.exists()


@pytest.mark.usefixtures("pinned_price")
def test_switching_strategy_without_script_keeps_every_value_and_saves_nothing(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key]
) -> None:
    client, _ = logged_in("operator")
    acct, _ = account
    audit_before = AuditEntry.objects.count()
    # Typed: a name, a lower price; the upper price is still the static default the form filled in.
    typed = bot_data(acct, name="Kept name", switch_strategy="dca", **{"grid-lower": "50000", "grid-upper": "40000"})
    response = client.post("/bots/new/", typed)
    page = Page(response.content.decode())
    assert response.status_code == 200 and not Bot.objects.exists() and AuditEntry.objects.count() == audit_before
    assert page.by_name["strategy"]["value"] == "dca"
    assert page.by_name["name"]["value"] == "Kept name" and page.by_name["grid-lower"]["value"] == "50000"
    assert page.by_name["grid-upper"]["value"] == "66000"  # not typed: fitted to the price
    assert page.by_name["max_open_orders"]["value"] == "20"
    assert page.by_name["dca-quote_per_buy"]["value"] == "50"
    # And back, with a DCA value typed meanwhile: both strategies' values are there.
    back = {**typed, "strategy": "dca", "switch_strategy": "grid", "dca-quote_per_buy": "25"}
    page = Page(client.post("/bots/new/", back).content.decode())
    assert page.by_name["strategy"]["value"] == "grid"
    assert page.by_name["grid-lower"]["value"] == "50000" and page.by_name["dca-quote_per_buy"]["value"] == "25"
    assert client.post("/bots/new/", {**typed, "switch_strategy": "martingale"}).status_code == 400
    assert not Bot.objects.exists()


@pytest.mark.usefixtures("pinned_price")
def test_the_error_summary_links_every_invalid_field_and_marks_it(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key]
) -> None:
    client, _ = logged_in("operator")
    acct, _ = account
    bad = bot_data(acct, name="", max_drawdown_pct="0", **{"grid-levels": "1"})
    response = client.post("/bots/new/", bad)
    body = response.content.decode()
    assert response.status_code == 400 and not Bot.objects.exists()
    summary = body[body.index("data-error-summary") - 100 : body.index("</div>", body.index("data-error-summary"))]
    assert 'role="alert"' in summary and 'tabindex="-1"' in summary and "autofocus" in summary
    assert "Nothing was saved: 3 problems to fix." in summary
    page = Page(body)
    for name in ("name", "max_drawdown_pct", "grid-levels"):
        assert f'href="#id_{name}"' in summary
        field = page.by_name[name]
        assert field["id"] == f"id_{name}" and field["aria-invalid"] == "true"
        assert f"id_{name}_error" in str(field["aria-describedby"]).split() and f"id_{name}_error" in page.by_id
    assert "aria-invalid" not in page.by_name["symbols"]
    assert '<script type="module" src="/static/js/form-errors.js">' in body


def test_every_form_that_shares_the_field_template_gets_the_summary(logged_in: LoggedIn) -> None:
    client, who = logged_in("admin")
    stepped = client.post("/accounts/step-up/", {"code": who.code(1), "next": "/exchange-accounts/add/"})
    assert stepped["Location"] == "/exchange-accounts/add/"
    for url in ("/exchange-accounts/add/", "/alerts/webhook/", "/accounts/password/", "/accounts/users/"):
        response = client.get(url)
        assert response.status_code == 200 and "data-error-summary" not in response.content.decode(), url
    response = client.post("/accounts/password/", {"old_password": "wrong", "new_password1": "x", "new_password2": "y"})
    body = response.content.decode()
    assert "data-error-summary" in body and 'href="#id_old_password"' in body
    assert 'aria-invalid="true"' in body and 'id="id_old_password_error"' in body


@pytest.mark.usefixtures("pinned_price")
def test_the_edit_form_shows_the_market_and_keeps_the_bot_s_own_values(
    logged_in: LoggedIn, account: tuple[ExchangeAccount, Key]
) -> None:
    client, _ = logged_in("operator")
    acct, _ = account
    saved = bot_data(acct, **{"grid-lower": "20000", "grid-upper": "40000"})
    assert client.post("/bots/new/", saved).status_code == 302
    bot = Bot.objects.get()
    body = client.get(f"/bots/{bot.pk}/edit/").content.decode()
    page = Page(body)
    assert "BTC/USDT on sandbox: 1 BTC = 60000 USDT now." in body
    # The bot's own parameters, even at the static defaults, are never replaced by fitted values.
    assert page.by_name["grid-lower"]["value"] == "20000" and "data-suggested" not in page.by_name["grid-lower"]
    assert page.by_name["dca-quote_per_buy"]["data-suggested"] == "50"
