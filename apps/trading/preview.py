"""What a bot's first tick would do, asked before it exists: the bot form's preview. Nothing is placed or stored.

The strategy's own `decide()` is asked, as the tick asks it (apps.trading.tick), for a bot that holds nothing and
has no open order, with the free quote a paper bot starts with, at the price and closes the tick would read. Each
intent is then held against the order gate's limit rules (the same functions the gate runs, fed with what the
tick would have placed before it) and against the rules the exchange publishes for the market (minimum amount and
order value, the amount step and the price tick). What a first tick cannot meet is left out: a fresh bot has no
loss, and no order history for the size-anomaly check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.bots.halts import global_halt_active
from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.selectors import exchange_markets
from apps.strategies.base import ZERO, MarketView, OrderIntent, Strategy, plain
from apps.trading.gate import (
    intent_invalid,
    open_orders_breach,
    order_notional_breach,
    position_breach,
    rate_breach,
)
from apps.trading.ledger import Breach
from apps.trading.marketdata import market_price
from apps.trading.models import Order
from apps.trading.tick import strategy_closes

# The limits a preview holds intents against, by the Bot field that sets each (a form may leave one unset).
LIMIT_LABELS = {
    "max_order_notional": "the max order size",
    "max_position_notional": "the max position",
    "max_open_orders": "the max open orders",
    "max_orders_per_minute": "the max orders per minute",
}
LIMIT_FIELDS = tuple(LIMIT_LABELS)


@dataclass(frozen=True)
class PreviewOrder:
    symbol: str
    side: str
    type: str
    amount: Decimal  # as sent: on the market's amount step
    price: Decimal | None  # the limit price as sent (on the tick); None for a market order
    notional: Decimal  # valued at the limit price, or the market price for a market order
    refusal: str = ""  # why the gate or the exchange would refuse it; "" when it would be placed
    note: str = ""  # what the exchange's steps changed


@dataclass
class SymbolPreview:
    symbol: str
    price: Decimal
    orders: list[PreviewOrder] = field(default_factory=list)


@dataclass
class TickPreview:
    quote_free: Decimal
    symbols: list[SymbolPreview] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def orders(self) -> list[PreviewOrder]:
        return [order for symbol in self.symbols for order in symbol.orders]


@dataclass
class _Book:
    """What the previewed tick has placed so far: resting limit orders, and market orders (filled at once)."""

    resting: list[OrderIntent] = field(default_factory=list)
    held: dict[str, Decimal] = field(default_factory=dict)
    placed: int = 0

    def pending(self, intent: OrderIntent) -> Decimal:
        same = (o.amount for o in self.resting if o.symbol == intent.symbol and o.side == intent.side)
        return sum(same, ZERO)

    def add(self, intent: OrderIntent) -> None:
        self.placed += 1
        if intent.type == Order.Type.LIMIT:
            self.resting.append(intent)
        else:
            sign = 1 if intent.side == Order.Side.BUY else -1
            self.held[intent.symbol] = self.held.get(intent.symbol, ZERO) + sign * intent.amount


def _limit_breach(bot: Bot, intent: OrderIntent, price: Decimal, book: _Book) -> Breach | None:
    """The gate's first limit rule the intent breaks, in the gate's order; unset limits are not checked."""
    breaches: tuple[Callable[[], Breach | None], ...] = (
        lambda: order_notional_breach(notional=intent.amount * price, limit=bot.max_order_notional),
        lambda: position_breach(
            intent=intent,
            price=price,
            held=book.held.get(intent.symbol, ZERO),
            pending=book.pending(intent),
            limit=bot.max_position_notional,
        ),
        lambda: open_orders_breach(open_count=len(book.resting), limit=bot.max_open_orders),
        lambda: rate_breach(recent=book.placed, limit=bot.max_orders_per_minute),
    )
    for limit, breach in zip(LIMIT_FIELDS, breaches, strict=True):
        found = breach() if getattr(bot, limit) is not None else None
        if found is not None:
            return found
    return None


def _order(intent: OrderIntent, market: port.Market | None, price: Decimal, book: _Book, bot: Bot) -> PreviewOrder:
    amount, limit_price = intent.amount, intent.price
    note = ""
    if market is not None:
        amount, limit_price = market.as_sent(amount=intent.amount, price=intent.price)
        changed = [
            text
            for text, before, after in (
                (f"amount cut to the {plain(market.amount_step or 0)} step", intent.amount, amount),
                (f"price on the {plain(market.price_step or 0)} tick", intent.price, limit_price),
            )
            if before != after
        ]
        note = "; ".join(changed)
    sent = OrderIntent(intent.symbol, intent.side, intent.type, amount, limit_price, intent.tag)
    reference = limit_price if intent.type == Order.Type.LIMIT else price
    refusal = intent_invalid(sent, reference)
    if refusal is None:
        assert reference is not None
        breach = _limit_breach(bot, sent, reference, book)
        refusal = breach.message if breach is not None else None
        if refusal is None and market is not None:
            refusal = market.order_problem(amount=amount, price=reference)
    if not refusal:
        book.add(sent)
    notional = amount * reference if reference is not None else ZERO
    return PreviewOrder(
        intent.symbol, intent.side, intent.type, amount, limit_price, notional, refusal=refusal or "", note=note
    )


def first_tick_preview(*, bot: Bot, strategy: type[Strategy], values: dict[str, Any]) -> TickPreview:
    """The orders a first tick of `bot` (unsaved: the form's values) would place, each with the reason it would be
    refused, if it would be. Reads public market data (ExchangeError when it cannot); places and stores nothing."""
    quote_free = bot.paper_balance
    preview = TickPreview(quote_free=quote_free)
    if global_halt_active():
        preview.notes.append("Trading is halted everywhere now: the gate refuses every order until it is resumed.")
    if bot.halted:
        preview.notes.append("This bot is halted: the gate refuses its orders until an admin clears the halt.")
    if bot.mode == Bot.Mode.LIVE:
        preview.notes.append(
            f"A live bot spends what the account holds free; this preview assumes {plain(quote_free)}, its paper "
            "balance."
        )
    unset = [name for name in LIMIT_FIELDS if getattr(bot, name) is None]
    if unset:
        names = ", ".join(LIMIT_LABELS[name] for name in unset)
        preview.notes.append(f"Not checked against {names}: fill in a valid value to check it.")
    markets = exchange_markets(bot.account.exchange_id)
    exchange = port.Exchange(exchange_id=bot.account.exchange_id)
    book = _Book()
    try:
        for symbol in bot.symbols:
            price = market_price(bot=bot, exchange=exchange, symbol=symbol)
            view = MarketView(
                symbol=symbol,
                price=price,
                closes=strategy_closes(bot, exchange, symbol, values),
                base_position=ZERO,
                average_entry=None,
                open_orders=(),
                quote_free=quote_free,
            )
            decision = strategy(values).decide(view, {})
            row = SymbolPreview(symbol=symbol, price=price)
            row.orders = [_order(intent, markets.get(symbol), price, book, bot) for intent in decision.intents]
            preview.symbols.append(row)
    finally:
        exchange.close()
    return preview
