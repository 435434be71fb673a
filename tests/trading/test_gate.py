"""The order gate against the sandbox: every refusal leaves the exchange untouched and is recorded."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from apps.bots.halts import global_halt_active, global_halt_clear, global_halt_set
from apps.bots.models import Bot
from apps.strategies.base import OrderIntent
from apps.trading.gate import OrderRefused, gate_check, place_order
from apps.trading.ids import CLIENT_ORDER_ID_RE, client_order_id
from apps.trading.ledger import ledger_for
from apps.trading.models import BotLedger, GateRefusal, Order
from tests.trading.conftest import SYMBOL, Live, audit_actions

pytestmark = pytest.mark.django_db


def buy(tag: str, amount: str = "0.001", price: str | None = "50000", symbol: str = SYMBOL) -> OrderIntent:
    return OrderIntent(
        symbol, "buy", "limit" if price else "market", Decimal(amount), Decimal(price) if price else None, tag
    )


def assert_refused(live: Live, bot: Bot, intent: OrderIntent, reason: str) -> GateRefusal:
    before = live.requests()
    with pytest.raises(OrderRefused) as caught:
        place_order(bot=bot, intent=intent, exchange=live.exchange)
    assert caught.value.decision.reason == reason
    assert live.requests() == before  # nothing reached the exchange
    refusal = GateRefusal.objects.get(bot=bot, intent_tag=intent.tag)
    assert refusal.reason == reason and refusal.message
    entries = audit_actions(bot, "gate.refused")
    assert entries and entries[-1].data["reason"] == reason and entries[-1].data["refusal"] == refusal.pk
    assert not Order.objects.filter(bot=bot, intent_tag=intent.tag).exists()
    return refusal


def test_it_places_an_allowed_order_on_the_exchange_once(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    order = place_order(bot=bot, intent=buy("t-1"), exchange=live.exchange)
    assert order.status == Order.Status.OPEN and order.exchange_order_id
    assert order.client_order_id == client_order_id(bot.pk, "t-1", 0)
    again = place_order(bot=bot, intent=buy("t-1"), exchange=live.exchange)  # a retried tick
    assert again.pk == order.pk
    remote = live.exchange_orders()
    assert [o["clientOrderId"] for o in remote] == [order.client_order_id]
    assert audit_actions(bot, "order.placed")[0].data["client_order_id"] == order.client_order_id


def test_it_adopts_an_order_the_exchange_already_has_instead_of_doubling_it(
    live: Live, make_bot: Callable[..., Bot]
) -> None:
    bot = make_bot()
    cid = client_order_id(bot.pk, "t-dup", 0)
    # An earlier attempt reached the exchange, then the process died before storing the row.
    live.ccxt.create_order(SYMBOL, "limit", "buy", 0.001, 50000, {"newClientOrderId": cid})
    order = place_order(bot=bot, intent=buy("t-dup"), exchange=live.exchange)
    assert order.client_order_id == cid and order.status == Order.Status.OPEN
    remote = live.exchange_orders()
    assert len(remote) == 1 and str(remote[0]["orderId"]) == order.exchange_order_id
    assert live.exchange.order(symbol=SYMBOL, client_order_id=cid).id == order.exchange_order_id


def test_it_refuses_every_order_while_the_global_halt_is_active(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    global_halt_set(reason="incident drill", actor="system:test")
    assert global_halt_active()
    refusal = assert_refused(live, bot, buy("t-halt"), GateRefusal.Reason.GLOBAL_HALT)
    assert "incident drill" in refusal.message
    with pytest.raises(OrderRefused):
        place_order(bot=bot, intent=buy("t-halt-2", price=None), exchange=live.exchange)  # market orders too
    assert live.exchange_orders() == []
    global_halt_clear(actor="system:test")
    assert place_order(bot=bot, intent=buy("t-after"), exchange=live.exchange).status == Order.Status.OPEN


def test_it_refuses_when_the_bot_was_halted_in_the_database(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    Bot.objects.filter(pk=bot.pk).update(halted=True, halt_reason="operator stop")  # `bot` in memory is stale
    assert_refused(live, bot, buy("t-bot-halt"), GateRefusal.Reason.BOT_HALTED)


def test_it_refuses_a_bot_told_to_stop_even_once_the_global_halt_is_lifted(
    live: Live, make_bot: Callable[..., Bot]
) -> None:
    bot = make_bot()
    # A kill: halt everywhere and every bot told to stop; this bot's worker is still finishing its tick.
    global_halt_set(reason="kill", actor="system:test")
    Bot.objects.filter(pk=bot.pk).update(desired_state=Bot.Desired.STOPPED)  # `bot` in memory is stale
    assert_refused(live, bot, buy("t-stopped-1"), GateRefusal.Reason.GLOBAL_HALT)
    global_halt_clear(actor="system:test")  # resumed before that worker exited
    refusal = assert_refused(live, bot, buy("t-stopped-2"), GateRefusal.Reason.BOT_STOPPED)
    assert refusal.message == "The bot was told to stop; its worker may place no more orders."
    assert refusal.get_reason_display() == "Bot told to stop"
    assert live.exchange_orders() == []
    Bot.objects.filter(pk=bot.pk).update(desired_state=Bot.Desired.RUNNING)  # started again
    assert place_order(bot=bot, intent=buy("t-started"), exchange=live.exchange).status == Order.Status.OPEN


def test_it_refuses_a_symbol_outside_the_allowlist(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    assert_refused(live, bot, buy("t-eth", amount="0.01", price="2000", symbol="ETH/USDT"), GateRefusal.Reason.SYMBOL)


def test_it_refuses_an_order_above_the_max_order_notional(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(max_order_notional=Decimal("100"))
    refusal = assert_refused(live, bot, buy("t-big", amount="0.003"), GateRefusal.Reason.ORDER_NOTIONAL)
    assert refusal.notional == Decimal("150")


def test_it_refuses_an_order_that_would_exceed_the_max_position(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(max_position_notional=Decimal("120"))
    place_order(bot=bot, intent=buy("t-pos-1"), exchange=live.exchange)  # 50 resting
    place_order(bot=bot, intent=buy("t-pos-2"), exchange=live.exchange)  # 100 with resting orders
    assert_refused(live, bot, buy("t-pos-3"), GateRefusal.Reason.POSITION_NOTIONAL)  # 150 > 120


def test_it_refuses_beyond_the_max_open_orders(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(max_open_orders=2)
    for i in range(2):
        place_order(bot=bot, intent=buy(f"t-open-{i}"), exchange=live.exchange)
    assert_refused(live, bot, buy("t-open-2"), GateRefusal.Reason.OPEN_ORDERS)
    assert len(live.exchange_orders(open_only=True)) == 2


def test_it_refuses_beyond_the_max_orders_per_minute(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(max_orders_per_minute=3)
    for i in range(3):
        place_order(bot=bot, intent=buy(f"t-rate-{i}"), exchange=live.exchange)
    assert_refused(live, bot, buy("t-rate-3"), GateRefusal.Reason.RATE)


def _set_equity(bot: Bot, *, peak: str, day_start: str, last: str) -> None:
    ledger_for(bot)
    BotLedger.objects.filter(bot=bot).update(
        peak_equity=Decimal(peak), day_start_equity=Decimal(day_start), last_equity=Decimal(last)
    )


def test_it_refuses_and_halts_the_bot_beyond_the_daily_loss_limit(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(daily_loss_limit=Decimal("500"), max_drawdown_pct=Decimal("50"))
    _set_equity(bot, peak="70000", day_start="70000", last="69000")  # lost 1000 today
    assert_refused(live, bot, buy("t-loss"), GateRefusal.Reason.DAILY_LOSS)
    bot.refresh_from_db()
    assert bot.halted and "daily loss" in bot.halt_reason
    assert audit_actions(bot, "bot.halted")
    assert_refused(live, bot, buy("t-loss-2"), GateRefusal.Reason.BOT_HALTED)  # stays halted


def test_it_refuses_and_halts_the_bot_beyond_the_max_drawdown(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(daily_loss_limit=Decimal("100000"), max_drawdown_pct=Decimal("10"))
    # Measured from the peak, not from the start: the day began below the peak.
    _set_equity(bot, peak="80000", day_start="69000", last="70000")
    assert_refused(live, bot, buy("t-dd"), GateRefusal.Reason.DRAWDOWN)
    bot.refresh_from_db()
    assert bot.halted and "drawdown" in bot.halt_reason


def test_it_refuses_an_order_far_larger_than_the_bots_usual_size(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(size_anomaly_factor=Decimal("5"))
    for i in range(5):
        place_order(bot=bot, intent=buy(f"t-usual-{i}"), exchange=live.exchange)  # 50 each
    refusal = assert_refused(live, bot, buy("t-huge", amount="0.006"), GateRefusal.Reason.SIZE_ANOMALY)  # 300
    assert refusal.notional == Decimal("300")


def test_it_does_not_judge_size_before_five_orders(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(size_anomaly_factor=Decimal("2"))
    place_order(bot=bot, intent=buy("t-first"), exchange=live.exchange)
    assert place_order(bot=bot, intent=buy("t-second", amount="0.01"), exchange=live.exchange).is_open


def test_it_refuses_an_invalid_intent(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    assert_refused(live, bot, buy("t-neg", amount="-1"), GateRefusal.Reason.INVALID)


def test_a_dry_run_gate_check_allows_within_limits(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    decision = gate_check(bot=bot, intent=buy("t-dry"), price=Decimal("50000"))
    assert decision.allowed and decision.notional == Decimal("50")


def test_client_order_ids_are_deterministic_and_valid_for_binance() -> None:
    a = client_order_id(7, "grid-3-buy", 12)
    assert a == client_order_id(7, "grid-3-buy", 12)
    assert a.endswith("-grid-3-buy") and CLIENT_ORDER_ID_RE.match(a)
    assert len({a, client_order_id(7, "grid-3-buy", 13), client_order_id(8, "grid-3-buy", 12)}) == 3
    long = client_order_id(7, "a tag with spaces that is much too long for the suffix", 0)
    assert CLIENT_ORDER_ID_RE.match(long) and len(long) <= 36
