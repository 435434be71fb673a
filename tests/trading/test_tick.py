"""Ticks against the sandbox: grid orders reach the exchange, fills are stored once, re-runs never double."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction

from apps.bots.halts import global_halt_set
from apps.bots.models import Bot
from apps.trading.ledger import ledger_for
from apps.trading.models import Fill, GateRefusal, Order, Position
from apps.trading.paper import public_exchange
from apps.trading.sync import orders_sync
from apps.trading.tick import tick_run
from tests.trading.conftest import SYMBOL, Live, audit_actions

pytestmark = pytest.mark.django_db
# Grid 55000..65000 in 5 levels with BTC at 60000: buys rest at 55000 and 57500; 60000 is not below.
GRID_BUYS = {Decimal("55000"), Decimal("57500")}


class Crash(Exception):
    pass


def _prices(orders: list[dict[str, Any]]) -> set[Decimal]:
    return {Decimal(o["price"]) for o in orders}


def test_a_tick_places_grid_orders_and_stores_each_fill_exactly_once(
    live: Live, make_bot: Callable[..., Bot], sandbox: Any
) -> None:
    bot = make_bot()
    first = tick_run(bot=bot, exchange=live.exchange)
    assert len(first.placed) == 2 and not first.refused
    assert _prices(live.exchange_orders(open_only=True)) == GRID_BUYS
    assert ledger_for(bot).generation == 1

    sandbox.admin.set_price(SYMBOL, "57000", hold=True)  # crosses the 57500 buy (0.001 fills at once)
    second = tick_run(bot=bot, exchange=live.exchange)
    assert second.new_fills == 1
    order = Order.objects.get(bot=bot, price=Decimal("57500"))
    assert order.status == Order.Status.FILLED and order.filled == Decimal("0.001")
    fill = Fill.objects.get(order=order)
    assert fill.price == Decimal("57500") and fill.fee_currency == "BTC"

    # Polling again (twice) finds the same trade and stores nothing new.
    assert orders_sync(bot=bot, exchange=live.exchange).new_fills == 0
    assert tick_run(bot=bot, exchange=live.exchange).new_fills == 0
    assert Fill.objects.filter(order__bot=bot).count() == 1
    position = Position.objects.get(bot=bot, symbol=SYMBOL)
    assert position.base_quantity == Decimal("0.001") - fill.fee
    assert position.average_entry is not None and position.average_entry > Decimal("57500")  # fee in base
    bot.refresh_from_db()
    assert bot.last_heartbeat is not None and SYMBOL in bot.strategy_state
    # The filled level is bought again (new generation, new id) now that the price is back under it.
    assert len([o for o in live.exchange_orders() if Decimal(o["price"]) == Decimal("55000")]) == 1


def test_a_tick_rerun_after_a_crash_does_not_double_any_order(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    # The orders reach the exchange, then the worker dies before its transaction commits: the
    # database forgets the orders and the generation bump, the exchange does not forget the orders.
    with pytest.raises(Crash), transaction.atomic():
        assert len(tick_run(bot=bot, exchange=live.exchange).placed) == 2
        raise Crash
    assert not Order.objects.filter(bot=bot).exists() and ledger_for(bot).generation == 0
    assert len(live.exchange_orders()) == 2

    rerun = tick_run(bot=bot, exchange=live.exchange)
    assert len(rerun.placed) == 2  # adopted: the exchange refused the duplicates, we fetched them
    remote = live.exchange_orders()
    assert len(remote) == 2
    assert {str(o["orderId"]) for o in remote} == set(
        Order.objects.filter(bot=bot).values_list("exchange_order_id", flat=True)
    )
    # And the next generation sees the resting orders: no new ones.
    assert tick_run(bot=bot, exchange=live.exchange).placed == []
    assert len(live.exchange_orders()) == 2


def test_a_tick_sends_nothing_while_the_global_halt_is_active(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    global_halt_set(reason="drill", actor="system:test")
    before = live.requests()
    result = tick_run(bot=bot, exchange=live.exchange)
    assert result.skipped == "global halt" and result.placed == []
    assert live.requests() == before and live.exchange_orders() == []
    bot.refresh_from_db()
    assert bot.last_heartbeat is not None  # still alive and syncing, just not ordering


# BTC at 60,000: buys of 0.01 rest at 55,000 and 50,000; a fall to 40,000 fills both (0.02 BTC at 52,500).
LOSING_GRID = {"lower": "50000", "upper": "65000", "levels": 4, "order_amount": "0.01"}


def test_a_drawdown_during_a_tick_halts_the_bot_and_places_nothing(
    live: Live, make_bot: Callable[..., Bot], sandbox: Any
) -> None:
    bot = make_bot(params=LOSING_GRID, max_position_notional=Decimal("1300"), max_drawdown_pct=Decimal("15"))
    # The bot's own equity: its max position as basis plus its own PnL (the account's 1 BTC is not its).
    assert tick_run(bot=bot, exchange=live.exchange).equity == Decimal("1300")
    placed = len(live.exchange_orders())
    sandbox.admin.set_price(SYMBOL, "40000", hold=True)  # its 0.02 BTC lose 250: 19.2% below its peak
    result = tick_run(bot=bot, exchange=live.exchange)
    bot.refresh_from_db()
    assert bot.halted and "drawdown" in bot.halt_reason and result.skipped == "bot halted"
    assert bot.halt_data["drawdown_pct"] == "19.29" and bot.halt_data["limit_pct"] == "15.00"
    assert audit_actions(bot, "bot.halted")
    assert len(live.exchange_orders()) == placed  # nothing new


def test_a_daily_loss_during_a_tick_halts_the_bot(live: Live, make_bot: Callable[..., Bot], sandbox: Any) -> None:
    bot = make_bot(params=LOSING_GRID, max_position_notional=Decimal("1300"), daily_loss_limit=Decimal("200"))
    tick_run(bot=bot, exchange=live.exchange)
    sandbox.admin.set_price(SYMBOL, "40000", hold=True)  # its own 0.02 BTC lose 250
    tick_run(bot=bot, exchange=live.exchange)
    bot.refresh_from_db()
    assert bot.halted and "daily loss" in bot.halt_reason and bot.halt_data["loss"] == "250.80"


def test_paper_mode_places_nothing_on_the_exchange_yet_records_simulated_fills(
    live: Live, make_bot: Callable[..., Bot], sandbox: Any
) -> None:
    bot = make_bot(mode=Bot.Mode.PAPER, paper_balance=Decimal("1000"))
    client = public_exchange(bot=bot)
    assert not client.authenticated  # a paper bot's exchange client carries no key
    total_before = sandbox.admin.order_count().total

    tick_run(bot=bot, exchange=client)  # grid: paper buys resting at 55000 and 57500
    resting = Order.objects.filter(bot=bot, paper=True, status=Order.Status.OPEN)
    assert {o.price for o in resting} == GRID_BUYS
    sandbox.admin.set_price(SYMBOL, "57000", hold=True)
    result = tick_run(bot=bot, exchange=client)
    assert result.new_fills == 1
    fill = Fill.objects.get(order__bot=bot)
    assert fill.price == Decimal("57500") and fill.trade_id.startswith("paper-")
    ledger = ledger_for(bot)
    assert ledger.paper_quote == Decimal("1000") - Decimal("57.5")
    assert Position.objects.get(bot=bot).base_quantity == Decimal("0.000999")

    market = make_bot(
        mode=Bot.Mode.PAPER,
        strategy="dca",
        paper_balance=Decimal("1000"),
        params={"quote_per_buy": "100", "every_ticks": 1, "take_profit_pct": "5"},
    )
    tick_run(bot=market, exchange=client)
    bought = Order.objects.get(bot=market)
    assert bought.status == Order.Status.FILLED and bought.average is not None
    assert Fill.objects.filter(order=bought).count() == 1

    assert sandbox.admin.order_count().total == total_before  # no order of either bot reached the exchange
    assert live.exchange_orders() == []


def test_paper_orders_pass_the_gate_too(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(mode=Bot.Mode.PAPER, max_order_notional=Decimal("10"))
    result = tick_run(bot=bot, exchange=public_exchange(bot=bot))
    assert result.placed == [] and set(result.refused) == {GateRefusal.Reason.ORDER_NOTIONAL}
    assert GateRefusal.objects.filter(bot=bot).count() == 2


def test_paper_orders_the_market_does_not_cross_are_not_locked_at_each_tick(
    live: Live, make_bot: Callable[..., Bot], sandbox: Any
) -> None:
    """A resting paper order is locked and read again only when the market crosses it (to fill it): a grid bot's
    dozen resting orders took a transaction each at every tick."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.trading.paper import paper_match

    bot = make_bot(mode=Bot.Mode.PAPER, paper_balance=Decimal("1000"))
    client = public_exchange(bot=bot)
    tick_run(bot=bot, exchange=client)  # grid: paper buys resting at 55000 and 57500, below the market
    assert Order.objects.filter(bot=bot, paper=True, status=Order.Status.OPEN).count() == len(GRID_BUYS)
    with CaptureQueriesContext(connection) as uncrossed:
        assert paper_match(bot=bot, exchange=client) == 0

    def order_locks(queries: list[dict[str, str]]) -> int:
        return sum(1 for q in queries if 'FROM "trading_order"' in q["sql"] and "FOR UPDATE" in q["sql"])

    assert order_locks(uncrossed.captured_queries) == 0
    sandbox.admin.set_price(SYMBOL, "57000", hold=True)  # crosses the 57500 buy only
    with CaptureQueriesContext(connection) as crossed:
        assert paper_match(bot=bot, exchange=client) == 1
    assert order_locks(crossed.captured_queries) == 1
