"""One strategy tick of one bot: sync, value, decide, gate and place. Synchronous; runs in the bot's worker.

A tick is safe to re-run: its orders' client order ids depend on the bot's generation, which
only moves on once the tick has completed. A tick killed half-way re-sends the same ids next
time, and the exchange refuses those it already has (the gate then adopts them).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import F
from django.utils import timezone

from apps.bots.halts import bot_halt, global_halt_active
from apps.bots.models import Bot
from apps.exchanges import port
from apps.strategies import get_strategy
from apps.strategies.base import Decision, MarketView, OpenOrder, Strategy
from apps.trading import events
from apps.trading.gate import OrderRefused, order_cancel, place_order
from apps.trading.ledger import (
    equity_update,
    ledger_for,
    loss_breach,
    mark,
    own_equity,
    paper_equity,
    split_symbol,
)
from apps.trading.marketdata import market_closes, market_price
from apps.trading.models import ZERO, BotLedger, Order, Position
from apps.trading.paper import paper_match
from apps.trading.sync import orders_sync

logger = logging.getLogger(__name__)
MIN_CANDLES = 60
MAX_CANDLES = 1000


@dataclass
class TickResult:
    generation: int
    skipped: str = ""  # why no strategy decision was taken ("global halt", "bot halted"), if so
    placed: list[str] = field(default_factory=list)  # client order ids
    refused: list[str] = field(default_factory=list)  # gate reason codes
    canceled: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # client order ids the exchange refused
    errors: list[str] = field(default_factory=list)
    new_fills: int = 0
    equity: Decimal | None = None


def strategy_closes(bot: Bot, exchange: port.Exchange, symbol: str, values: dict[str, Any]) -> tuple[Decimal, ...]:
    # Enough candles for the longest window a strategy asks for (ma_cross's "slow"), plus one.
    wanted = max(MIN_CANDLES, int(values.get("slow", 0)) + 2)
    # The host's shared market-data feed when fresh, else the exchange by REST.
    return market_closes(bot=bot, exchange=exchange, symbol=symbol, limit=min(wanted, MAX_CANDLES))


def _view(bot: Bot, symbol: str, price: Decimal, closes: tuple[Decimal, ...], quote_free: Decimal) -> MarketView:
    position = Position.objects.filter(bot=bot, symbol=symbol).first()
    open_orders = Order.objects.filter(bot=bot, symbol=symbol, status__in=Order.OPEN_STATUSES).order_by("id")
    return MarketView(
        symbol=symbol,
        price=price,
        closes=closes,
        base_position=position.base_quantity if position else ZERO,
        average_entry=position.average_entry if position else None,
        open_orders=tuple(OpenOrder(o.client_order_id, o.side, o.price, o.amount - o.filled) for o in open_orders),
        quote_free=quote_free,
    )


def _act(bot: Bot, exchange: port.Exchange, decision: Decision, price: Decimal, result: TickResult) -> None:
    for cid in decision.cancel:
        order = Order.objects.filter(bot=bot, client_order_id=cid).select_related("bot").first()
        if order is None or not order.is_open:
            continue
        try:
            order_cancel(order=order, exchange=exchange)
            result.canceled.append(cid)
        except port.ExchangeError as exc:
            result.errors.append(exc.message)
    for intent in decision.intents:
        if global_halt_active():
            # Each order is gated anyway; stopping here saves a refusal per remaining intent.
            result.refused.append("global_halt")
            break
        try:
            order = place_order(bot=bot, intent=intent, exchange=exchange, price=price)
        except OrderRefused as refused:
            result.refused.append(refused.decision.reason)
            if bot.halted:
                break
            continue
        except port.ExchangeError as exc:
            result.errors.append(exc.message)
            continue
        (result.rejected if order.status == Order.Status.REJECTED else result.placed).append(order.client_order_id)


def tick_run(*, bot: Bot, exchange: port.Exchange) -> TickResult:
    """Run one tick. `exchange`: the bot's account with its key (live), or public market data (paper)."""
    bot.refresh_from_db()
    ledger: BotLedger = ledger_for(bot)
    result = TickResult(generation=ledger.generation)
    result.new_fills += _catch_up(bot, exchange)
    prices, balance = _value(bot, exchange, ledger, result)
    state = _decide_and_act(bot, exchange, ledger, prices, balance, result)
    # Heartbeat and state with update() (never save(): it would overwrite a halt set meanwhile), then the
    # next generation.
    Bot.objects.filter(pk=bot.pk).update(last_heartbeat=timezone.now(), strategy_state=state)
    events.heartbeat(bot.pk, equity=result.equity, prices=prices)
    BotLedger.objects.filter(pk=ledger.pk, generation=result.generation).update(generation=F("generation") + 1)
    return result


def _catch_up(bot: Bot, exchange: port.Exchange) -> int:
    """What happened since the last tick: order states and fills; returns the new fills."""
    if bot.mode == Bot.Mode.PAPER:
        return paper_match(bot=bot, exchange=exchange)
    return orders_sync(bot=bot, exchange=exchange).new_fills


def _value(
    bot: Bot, exchange: port.Exchange, ledger: BotLedger, result: TickResult
) -> tuple[dict[str, Decimal], port.Balances | None]:
    """Prices, positions and equity; the loss breakers trip here even when no order is proposed."""
    prices = {symbol: market_price(bot=bot, exchange=exchange, symbol=symbol) for symbol in bot.symbols}
    for position in Position.objects.filter(bot=bot, symbol__in=prices):
        mark(position, prices[position.symbol])
        position.save(update_fields=["last_price", "unrealized_pnl", "updated_at"])
    ledger.refresh_from_db()
    balance = None if bot.mode == Bot.Mode.PAPER else exchange.balances()
    # The bot's own equity, never the account's: bots sharing an account do not share a loss.
    equity = paper_equity(bot=bot, ledger=ledger, prices=prices) if balance is None else own_equity(bot=bot)
    equity_update(ledger=ledger, equity=equity)
    result.equity = equity
    breach = loss_breach(bot=bot, ledger=ledger)
    if breach is not None:
        bot_halt(
            bot=bot,
            reason=breach.reason,
            message=breach.message,
            by="loss limits (the bot's own ledger)",
            data=breach.data,
        )
    return prices, balance


def _decide_and_act(
    bot: Bot,
    exchange: port.Exchange,
    ledger: BotLedger,
    prices: dict[str, Decimal],
    balance: port.Balances | None,
    result: TickResult,
) -> dict[str, Any]:
    """Ask the strategy and pass its intents to the gate, unless halted (the gate would refuse them anyway)."""
    bot.refresh_from_db(fields=["halted", "halt_reason"])
    state: dict[str, Any] = dict(bot.strategy_state or {})
    if global_halt_active():
        result.skipped = "global halt"
        return state
    if bot.halted:
        result.skipped = "bot halted"
        return state
    strategy_cls: type[Strategy] = get_strategy(bot.strategy)
    values = strategy_cls.clean(bot.params)
    strategy = strategy_cls(values)
    for symbol in bot.symbols:
        _, quote = split_symbol(symbol)
        quote_free = (
            (ledger.paper_quote if ledger.paper_quote is not None else bot.paper_balance)
            if balance is None
            else balance.free.get(quote, ZERO)
        )
        view = _view(bot, symbol, prices[symbol], strategy_closes(bot, exchange, symbol, values), quote_free)
        decision = strategy.decide(view, dict(state.get(symbol) or {}))
        _act(bot, exchange, decision, prices[symbol], result)
        state[symbol] = json.loads(json.dumps(decision.state, cls=DjangoJSONEncoder))
        if bot.halted:
            break
    return state
