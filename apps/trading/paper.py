"""Paper trading: orders filled by a local simulator against the exchange's real public market data.

A paper bot never uses a key: it reads the account's exchange's public market data through the port.
Market orders fill at once at the touch (ask for a buy, bid for a sell); limit orders fill at
their own price when placed marketable or later when the market crosses them. Fees follow
Binance without BNB: the buyer pays in the base asset, the seller in the quote asset.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from apps.bots.models import Bot
from apps.exchanges import port
from apps.trading import events
from apps.trading.ledger import fill_record, ledger_for, split_symbol
from apps.trading.marketdata import market_touch
from apps.trading.models import ZERO, Order, Position

FEE_RATE = Decimal("0.001")


def public_exchange(*, bot: Bot) -> port.Exchange:
    """The bot's exchange without credentials: market data only, it cannot place an order."""
    return port.Exchange(exchange_id=bot.account.exchange_id)


def _affordable(order: Order, price: Decimal) -> str | None:
    ledger = ledger_for(order.bot)
    if order.side == Order.Side.BUY:
        cash = ledger.paper_quote if ledger.paper_quote is not None else order.bot.paper_balance
        if price * order.amount > cash:
            return f"Insufficient paper balance: {price * order.amount:.8f} needed, {cash:.8f} available."
        return None
    position = Position.objects.filter(bot=order.bot, symbol=order.symbol).first()
    held = position.base_quantity if position else ZERO
    if order.amount > held:
        return f"Insufficient paper position: selling {order.amount}, holding {held}."
    return None


def _fill(order: Order, price: Decimal) -> None:
    base, quote = split_symbol(order.symbol)
    if order.side == Order.Side.BUY:
        fee, fee_currency = order.amount * FEE_RATE, base
    else:
        fee, fee_currency = price * order.amount * FEE_RATE, quote
    seq = itertools.count(order.fills.count() + 1)
    fill_record(
        order=order,
        trade_id=f"paper-{order.pk}-{next(seq)}",
        price=price,
        amount=order.amount,
        fee=fee,
        fee_currency=fee_currency,
        timestamp=timezone.now(),
    )
    order.status, order.filled, order.average = Order.Status.FILLED, order.amount, price
    order.save(update_fields=["status", "filled", "average", "updated_at"])


def _crossing_price(order: Order, bid: Decimal, ask: Decimal) -> Decimal | None:
    if order.type == Order.Type.MARKET:
        return ask if order.side == Order.Side.BUY else bid
    assert order.price is not None
    if order.side == Order.Side.BUY and ask <= order.price:
        return order.price
    if order.side == Order.Side.SELL and bid >= order.price:
        return order.price
    return None


def paper_place(*, order: Order, exchange: port.Exchange, market_price: Decimal | None = None) -> Order:
    """Accept a paper order (called by the gate's place_order only): fill it now if it is marketable."""
    order.exchange_order_id = f"paper-{order.pk}"
    bid, ask = market_touch(bot=order.bot, exchange=exchange, symbol=order.symbol)
    price = _crossing_price(order, bid, ask)
    problem = _affordable(order, price if price is not None else order.price or market_price or ask)
    if problem is not None:
        order.status, order.error = Order.Status.REJECTED, problem
        order.save(update_fields=["exchange_order_id", "status", "error", "updated_at"])
        return order
    order.status = Order.Status.OPEN
    order.save(update_fields=["exchange_order_id", "status", "updated_at"])
    if price is not None:
        _fill(order, price)
    return order


def paper_match(*, bot: Bot, exchange: port.Exchange) -> int:
    """Fill the bot's resting paper limit orders the market has crossed; returns how many filled."""
    filled = 0
    resting = Order.objects.filter(bot=bot, paper=True, status__in=Order.OPEN_STATUSES).select_related("bot")
    listed_orders = list(resting.order_by("created_at", "id"))
    # Read before any row is locked: a kill's cancel never waits for the market data.
    touches = {
        symbol: market_touch(bot=bot, exchange=exchange, symbol=symbol)
        for symbol in dict.fromkeys(o.symbol for o in listed_orders)
    }
    for listed in listed_orders:
        # Its side, type and price never change: one the market does not cross is left alone unlocked (a grid
        # bot rests a dozen orders, and a transaction each at every tick was most of a paper tick's work).
        if _crossing_price(listed, *touches[listed.symbol]) is None:
            continue
        with transaction.atomic():
            # Locked and read again: a kill may have cancelled it since the list was read (paper_cancel_open).
            order = Order.objects.select_for_update().select_related("bot").get(pk=listed.pk)
            if order.status not in Order.OPEN_STATUSES:
                continue
            price = _crossing_price(order, *touches[order.symbol])
            if price is None:
                continue
            problem = _affordable(order, price)  # resting paper orders reserve nothing, so check again
            if problem is not None:
                order.status, order.error = Order.Status.CANCELED, problem[:300]
                order.save(update_fields=["status", "error", "updated_at"])
                continue
            _fill(order, price)
            filled += 1
    return filled


def paper_cancel_open(*, bot_ids: Collection[int], why: str) -> list[Order]:
    """Cancel the bots' resting paper orders (the kill switch does): returns those cancelled, each announced.

    Locked row by row, so an order a paper_match is filling right now is either filled first or
    cancelled here, never both; the kill checks again once the workers are gone.
    """
    with transaction.atomic():
        resting = Order.objects.select_for_update().filter(
            bot_id__in=list(bot_ids), paper=True, status__in=Order.OPEN_STATUSES
        )
        cancelled = list(resting.order_by("created_at", "id"))
        for order in cancelled:
            order.status, order.error = Order.Status.CANCELED, why[:300]
            order.save(update_fields=["status", "error", "updated_at"])
    for order in cancelled:
        events.order_update(order)
    return cancelled
