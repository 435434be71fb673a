from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create, exchange_account_delete
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db


@pytest.fixture
def account(new_key: Callable[..., Key]) -> ExchangeAccount:
    key = new_key(ip_restrict=True)
    acct, _ = exchange_account_create(
        label="Bots account",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return acct


def grid_form(account: ExchangeAccount, **overrides: str) -> dict[str, str]:
    data = {
        "name": "Grid one",
        "account": str(account.pk),
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


def test_the_form_is_rendered_from_the_strategy_schema(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, _ = logged_in("operator")
    grid = client.get("/bots/new/?strategy=grid").content.decode()
    assert 'name="grid-lower"' in grid and 'name="grid-levels"' in grid and "Bottom of the grid" in grid
    dca = client.get("/bots/new/?strategy=dca").content.decode()
    # Every strategy's fields are on the page (switching keeps what was typed); only the chosen one's are shown.
    assert 'name="dca-take_profit_pct"' in dca and '<fieldset class="strategy-params" data-strategy="dca">' in dca
    assert '<fieldset class="strategy-params" data-strategy="grid" hidden>' in dca


def test_an_operator_creates_a_paper_bot_audited(
    logged_in: Callable[[str], tuple[Client, Person]], account: ExchangeAccount
) -> None:
    client, _ = logged_in("operator")
    response = client.post("/bots/new/?strategy=grid", grid_form(account))
    assert response.status_code == 302, response.content.decode()[:3000]
    bot = Bot.objects.get()
    assert bot.mode == "paper" and bot.desired_state == "stopped" and bot.symbols == ["BTC/USDT"]
    assert bot.params == {"lower": "20000", "upper": "40000", "levels": 10, "order_amount": "0.001"}
    entry = AuditEntry.objects.get(action="bot.created")
    assert entry.data["after"]["name"] == "Grid one" and entry.otp_verified


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"max_order_notional": "-5"}, "Enter a value between 0 and 1000000000"),
        ({"symbols": "BTC/USDT, NOPE/USDT"}, "Not listed on sandbox: NOPE/USDT"),
        ({"grid-lower": "50000", "grid-upper": "40000"}, "The upper price must be above the lower price"),
        ({"grid-levels": "1"}, "Enter a value between 2 and 200"),
        ({"name": ""}, "This field is required"),
    ],
)
def test_a_bad_form_is_refused_keeps_the_input_and_changes_nothing(
    logged_in: Callable[[str], tuple[Client, Person]], account: ExchangeAccount, overrides: dict[str, str], error: str
) -> None:
    client, _ = logged_in("operator")
    audit_before = AuditEntry.objects.count()
    response = client.post("/bots/new/?strategy=grid", grid_form(account, **overrides))
    body = response.content.decode()
    assert response.status_code == 400 and error in body
    assert 'value="20000"' in body or overrides.get("grid-lower") == "50000"  # the user's input is kept
    assert not Bot.objects.exists() and AuditEntry.objects.count() == audit_before


def test_an_edit_is_audited_with_a_before_after_diff(
    logged_in: Callable[[str], tuple[Client, Person]], account: ExchangeAccount
) -> None:
    client, _ = logged_in("operator")
    client.post("/bots/new/?strategy=grid", grid_form(account))
    bot = Bot.objects.get()
    response = client.post(
        f"/bots/{bot.pk}/edit/", grid_form(account, max_order_notional="250", **{"grid-levels": "12"})
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="bot.updated")
    assert entry.data["before"]["max_order_notional"] == "500.00000000"
    assert entry.data["after"]["max_order_notional"] == "250.00000000"
    assert entry.data["before"]["params"]["levels"] == 10 and entry.data["after"]["params"]["levels"] == 12
    assert set(entry.data["after"]) == {"max_order_notional", "params"}


def test_clone_start_and_stop(logged_in: Callable[[str], tuple[Client, Person]], account: ExchangeAccount) -> None:
    client, _ = logged_in("operator")
    client.post("/bots/new/?strategy=grid", grid_form(account))
    bot = Bot.objects.get()
    client.post(f"/bots/{bot.pk}/clone/")
    clone = Bot.objects.exclude(pk=bot.pk).get()
    assert clone.name == "Grid one (copy)" and clone.params == bot.params and clone.mode == "paper"
    client.post(f"/bots/{bot.pk}/start/")
    assert Bot.objects.get(pk=bot.pk).desired_state == "running"
    client.post(f"/bots/{bot.pk}/stop/")
    assert Bot.objects.get(pk=bot.pk).desired_state == "stopped"
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"bot.cloned", "bot.start_requested", "bot.stop_requested"} <= actions


def test_going_live_needs_an_admin_with_step_up(
    logged_in: Callable[[str], tuple[Client, Person]], account: ExchangeAccount
) -> None:
    operator, _ = logged_in("operator")
    operator.post("/bots/new/?strategy=grid", grid_form(account))
    bot = Bot.objects.get()
    assert operator.post(f"/bots/{bot.pk}/live/").status_code == 403
    admin, who = logged_in("admin")
    assert admin.post(f"/bots/{bot.pk}/live/")["Location"].startswith("/accounts/step-up/")
    assert Bot.objects.get().mode == "paper"
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    admin.post(f"/bots/{bot.pk}/live/")
    assert Bot.objects.get().mode == "live"
    assert AuditEntry.objects.filter(action="bot.mode_changed", data__after__mode="live").exists()


def test_a_viewer_sees_bots_but_cannot_change_them(
    logged_in: Callable[[str], tuple[Client, Person]], account: ExchangeAccount
) -> None:
    operator, _ = logged_in("operator")
    operator.post("/bots/new/?strategy=grid", grid_form(account))
    bot = Bot.objects.get()
    viewer, _ = logged_in("viewer")
    assert viewer.get("/bots/").status_code == 200 and viewer.get(f"/bots/{bot.pk}/").status_code == 200
    for url in ["/bots/new/", f"/bots/{bot.pk}/edit/"]:
        assert viewer.get(url).status_code == 403
    assert viewer.post(f"/bots/{bot.pk}/start/").status_code == 403
    assert Bot.objects.get().desired_state == "stopped"


def test_an_account_used_by_a_bot_cannot_be_deleted(account: ExchangeAccount, settings: Any) -> None:
    Bot.objects.create(
        name="user",
        account=account,
        strategy="grid",
        params={},
        symbols=["BTC/USDT"],
        max_order_notional=1,
        max_position_notional=1,
        daily_loss_limit=1,
        max_drawdown_pct=1,
    )
    with pytest.raises(ApplicationError, match="used by a bot"):
        exchange_account_delete(account=account, actor="system:test")
    assert ExchangeAccount.objects.filter(pk=account.pk).exists()


def test_the_accounts_page_counts_bots_not_orders(
    logged_in: Callable[[str], tuple[Client, Person]], account: ExchangeAccount
) -> None:
    from apps.bots.selectors import bots_using

    for name in ("a", "b"):
        Bot.objects.create(
            name=name,
            account=account,
            strategy="grid",
            params={},
            symbols=["BTC/USDT"],
            max_order_notional=1,
            max_position_notional=1,
            daily_loss_limit=1,
            max_drawdown_pct=1,
        )
    from apps.trading.models import Order

    Order.objects.create(
        bot=Bot.objects.get(name="a"),
        account=account,
        symbol="BTC/USDT",
        side="buy",
        type="limit",
        amount=1,
        price=1,
        client_order_id="t-1",
        intent_tag="t",
    )
    assert [b.name for b in bots_using(account)] == ["a", "b"]  # the order references the account too
