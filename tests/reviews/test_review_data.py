"""What a review computes: trades and PnL from the fills, and the period's unusual events."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.bots.halts import bot_halt
from apps.bots.models import Bot
from apps.killswitch.models import BreakerTrip, KillRun
from apps.reviews.periods import Period, day_period, month_period
from apps.reviews.selectors import review_build, review_digest
from apps.strategies.base import OrderIntent
from apps.trading.gate import OrderRefused, place_order
from apps.trading.models import Fill, Position
from apps.trading.reconcile import reconcile
from apps.trading.sync import orders_sync
from tests.people import PASSWORD, full_login, make_person
from tests.reviews.factories import DAY1, account, bot_on, fill
from tests.trading.conftest import SYMBOL, Live

pytestmark = pytest.mark.django_db
STORED = Decimal("1e-12")


def stored(value: Decimal) -> Decimal:
    return value.quantize(STORED, rounding=ROUND_HALF_UP)


def plain(value: Decimal) -> str:
    value = stored(value)
    return "0" if value == 0 else format(value.normalize(), "f")


def today() -> Period:
    return day_period(timezone.now().date())


def rows_of(data: dict[str, Any], bot: Bot) -> list[dict[str, Any]]:
    return [r for r in data["trades"] if r["bot_id"] == bot.pk]


# -- trades and PnL -----------------------------------------------------------------------------------


def test_trades_and_realized_pnl_come_from_fills_placed_and_synced_through_the_gate(
    live: Live, make_bot: Callable[..., Bot], sandbox: Any
) -> None:
    bot = make_bot()
    buy = place_order(
        bot=bot,
        intent=OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), Decimal("59000"), "rv-b"),
        exchange=live.exchange,
    )
    sandbox.admin.set_price(SYMBOL, "58900", hold=True)  # crosses the resting buy: it fills at 59000 (maker)
    assert orders_sync(bot=bot, exchange=live.exchange).new_fills == 1
    sell = place_order(
        bot=bot,
        intent=OrderIntent(SYMBOL, "sell", "limit", Decimal("0.004"), Decimal("61000"), "rv-s"),
        exchange=live.exchange,
    )
    sandbox.admin.set_price(SYMBOL, "61100", hold=True)
    assert orders_sync(bot=bot, exchange=live.exchange).new_fills == 1
    buy_fill, sell_fill = Fill.objects.get(order=buy), Fill.objects.get(order=sell)
    assert buy_fill.fee_currency == "BTC" and sell_fill.fee_currency == "USDT"  # the exchange's own fees

    data = review_build(day_period(sell_fill.timestamp.date()))
    [row] = rows_of(data, bot)
    # Average cost: the buyer's fee in BTC shrinks what was bought, raising the entry.
    entry = stored(Decimal("590") / (Decimal("0.01") - buy_fill.fee))
    realized = stored(Decimal("244") - sell_fill.fee - entry * Decimal("0.004"))
    assert row == {
        "bot_id": bot.pk,
        "bot": bot.name,
        "mode": "live",
        "symbol": SYMBOL,
        "base": "BTC",
        "quote": "USDT",
        "orders": 2,
        "fills": 2,
        "buys": 1,
        "sells": 1,
        "bought": "0.01",
        "sold": "0.004",
        "buy_value": "590",
        "sell_value": "244",
        "fees": plain(buy_fill.fee * Decimal("59000") + sell_fill.fee),
        "realized_pnl": plain(realized),
    }
    assert Position.objects.get(bot=bot).realized_pnl == realized  # the ledger agrees
    [pnl] = [p for p in data["pnl"] if p["bot_id"] == bot.pk]
    assert pnl["realized_pnl"] == plain(realized) and pnl["fills"] == 2
    assert {"mode": "live", "quote": "USDT", "fills": 2, "fees": row["fees"], "realized_pnl": plain(realized)} in (
        data["pnl_totals"]
    )


def test_pnl_is_split_by_period_and_mode_and_replays_the_average_cost_across_periods() -> None:
    acct = account()
    live_bot, paper_bot = bot_on(acct, "alpha"), bot_on(acct, "paper-beta", Bot.Mode.PAPER)
    day2, day3 = DAY1 + dt.timedelta(days=1), DAY1 + dt.timedelta(days=2)
    fill(live_bot, "buy", "1", "100", DAY1, fee="0.1")
    fill(live_bot, "buy", "1", "200", day2)
    fill(live_bot, "sell", "1", "300", day3, fee="0.3")
    fill(paper_bot, "buy", "2", "100", day3)
    fill(paper_bot, "sell", "1", "90", day3 + dt.timedelta(hours=1))

    first = review_build(day_period(DAY1.date()))
    assert [(r["bot"], r["fills"], r["realized_pnl"], r["fees"]) for r in first["trades"]] == [("alpha", 1, "0", "0.1")]
    # Day 3 sells at 300 what was bought at 100.1 (day 1) and 200 (day 2): entry 150.05.
    third = review_build(day_period(day3.date()))
    assert [(r["mode"], r["bot"], r["realized_pnl"]) for r in third["trades"]] == [
        ("live", "alpha", "149.65"),
        ("paper", "paper-beta", "-10"),
    ]
    assert [(t["mode"], t["realized_pnl"], t["fees"]) for t in third["pnl_totals"]] == [
        ("live", "149.65", "0.3"),
        ("paper", "-10", "0"),
    ]
    month = review_build(month_period(2026, 2))
    assert [(r["bot"], r["fills"], r["orders"], r["realized_pnl"]) for r in month["trades"]] == [
        ("alpha", 3, 3, "149.65"),
        ("paper-beta", 2, 2, "-10"),
    ]
    assert month["trades"][0]["bought"] == "2" and month["trades"][0]["buy_value"] == "300"
    # Replayed over all time, the review's arithmetic is the ledger's.
    for bot in (live_bot, paper_bot):
        assert Decimal(next(r for r in month["trades"] if r["bot_id"] == bot.pk)["realized_pnl"]) == (
            Position.objects.get(bot=bot).realized_pnl
        )
    assert review_build(day_period(DAY1.date() - dt.timedelta(days=1)))["trades"] == []


def test_the_same_data_gives_the_same_digest_and_a_new_fill_changes_it() -> None:
    bot = bot_on(account(), "gamma")
    fill(bot, "buy", "1", "100", DAY1)
    period = day_period(DAY1.date())
    digest = review_digest(review_build(period))
    assert review_digest(review_build(period)) == digest
    fill(bot, "sell", "1", "110", DAY1 + dt.timedelta(hours=3))
    assert review_digest(review_build(period)) != digest
    # Another day's fill is not this review's business.
    before = review_digest(review_build(period))
    fill(bot, "buy", "1", "100", DAY1 + dt.timedelta(days=1))
    assert review_digest(review_build(period)) == before


# -- unusual events ---------------------------------------------------------------------------------


def test_the_periods_unusual_events_are_listed(live: Live, make_bot: Callable[..., Bot], sandbox: Any) -> None:
    bot = make_bot()
    # Gate refusals, for real: a symbol the bot may not trade, twice.
    for tag in ("rv-x1", "rv-x2"):
        with pytest.raises(OrderRefused):
            place_order(
                bot=bot,
                intent=OrderIntent("ETH/USDT", "buy", "limit", Decimal("0.1"), Decimal("2900"), tag),
                exchange=live.exchange,
            )
    # A foreign order: placed on the account with the key, not through the console; reconciliation finds it.
    live.ccxt.create_order(SYMBOL, "limit", "buy", 0.001, 50000)
    assert len(reconcile(bot=bot, exchange=live.exchange).foreign) == 1
    # A breaker trip and a bot halted by the gate's loss breaker.
    trip = BreakerTrip.objects.create(kind="order_rate", subject="fleet", action="alert", message="120 orders/min")
    alert_raise(kind="circuit_breaker", message="Circuit breaker tripped: order rate", data={"trip": trip.pk})
    bot_halt(bot=bot, reason="daily_loss_limit", message="lost too much")
    KillRun.objects.create(
        scope="all", reason="suspected key leak", requested_via="shell", status="done", orders_cancelled=3
    )
    alert_raise(kind="key_check_failed", message="key can withdraw", data={"account": str(live.account.pk)})
    alert_raise(kind="deadman_failing", message="countdown not armed", severity="critical")
    alert_raise(kind="balance_mismatch", message="holds less than its bots")
    # Logins, for real: a known address, then a new one; wrong passwords until the lockout.
    pat = make_person("pat", "viewer")
    full_login(Client(), pat, ip="10.1.1.1")
    full_login(Client(), pat, ip="10.2.2.2", steps_ahead=1)  # a code not used yet
    intruder = Client()
    for _ in range(5):
        intruder.post("/accounts/login/", {"username": "pat", "password": PASSWORD + "x"}, REMOTE_ADDR="10.9.9.9")
    # A password typed into the user name field: a review never shows it, to any reader.
    Client().post("/accounts/login/", {"username": "Hunter2-typed-here", "password": "x"}, REMOTE_ADDR="10.8.8.8")
    # And an alert from another day, which is not this period's.
    old = alert_raise(kind="deadman_failing", message="last week")
    Alert.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=7))

    events = review_build(today())["events"]
    [refusals] = events["gate_refusals"]
    assert (refusals["bot"], refusals["reason"], refusals["count"]) == (bot.name, "symbol_not_allowed", 2)
    assert [(b["source"], b["subject"]) for b in events["breakers"]] == [
        ("Order-rate spike across the fleet", "fleet"),
        ("Order gate", f"bot:{bot.pk}"),
    ]
    [foreign] = events["foreign_orders"]
    assert (foreign["account"], foreign["symbol"], foreign["side"], foreign["price"]) == (
        live.account.label,
        SYMBOL,
        "buy",
        "50000",
    )
    assert [(k["reason"], k["requested_by"], k["cancelled"]) for k in events["kills"]] == [
        ("suspected key leak", "(shell)", 3)
    ]
    assert [(e["user"], e["ip"]) for e in events["new_ip_logins"]] == [("pat", "10.2.2.2")]
    assert [(f["username"], f["action"], f["count"], f["addresses"]) for f in events["failed_logins"]] == [
        ("(not a user)", "login.failed", 1, 1),
        ("pat", "login.failed", 5, 1),
    ]
    assert "Hunter2-typed-here" not in json.dumps(review_build(today()), default=str)
    assert [(e["username"], e["ip"]) for e in events["lockouts"]] == [("pat", "10.9.9.9")]
    assert [(k["account"], k["message"]) for k in events["key_check_failures"]] == [
        (live.account.label, "key can withdraw")
    ]
    assert [d["message"] for d in events["deadman_failures"]] == ["countdown not armed"]
    assert [a["kind"] for a in events["other_alerts"]] == ["balance_mismatch"]
    week_ago = day_period((timezone.now() - dt.timedelta(days=7)).date())
    assert [d["message"] for d in review_build(week_ago)["events"]["deadman_failures"]] == ["last week"]
