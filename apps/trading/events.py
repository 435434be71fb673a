"""Live events from trading: what the dashboard shows as it happens (apps.live publishes after commit)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from apps.events.services import publish
from apps.trading.models import Fill, GateRefusal, Order, Position


def _num(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def order_payload(order: Order) -> dict[str, Any]:
    return {
        "id": order.pk,
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "price": _num(order.price),
        "amount": _num(order.amount),
        "filled": _num(order.filled),
        "status": order.status,
        "paper": order.paper,
    }


def order_new(order: Order) -> None:
    publish(kind="order_new", bot_id=order.bot_id, data=order_payload(order))


def order_update(order: Order) -> None:
    publish(kind="order_update", bot_id=order.bot_id, data=order_payload(order))


def fill(fill: Fill, position: Position) -> None:
    order = fill.order
    publish(
        kind="fill",
        bot_id=order.bot_id,
        data={
            "order": order.pk,
            "symbol": order.symbol,
            "side": order.side,
            "price": _num(fill.price),
            "amount": _num(fill.amount),
            "fee": _num(fill.fee),
            "fee_currency": fill.fee_currency,
            "trade_id": fill.trade_id,
            "position": _num(position.base_quantity),
            # The rest of the position after this fill, for the bot page's positions table.
            "position_average_entry": _num(position.average_entry),
            "position_last_price": _num(position.last_price),
            "position_realized": _num(position.realized_pnl),
            "position_unrealized": _num(position.unrealized_pnl),
        },
    )


def gate_refusal(refusal: GateRefusal) -> None:
    publish(
        kind="gate_refusal",
        bot_id=refusal.bot_id,
        data={
            "id": refusal.pk,
            "symbol": refusal.symbol,
            "side": refusal.side,
            "reason": refusal.reason,
            "message": refusal.message,
        },
    )


def heartbeat(bot_id: int, *, equity: Decimal | None, prices: dict[str, Decimal] | None = None) -> None:
    """One tick done: heartbeat plus the bot's PnL now (and the prices it was marked at: the charts' last candle)."""
    positions = Position.objects.filter(bot_id=bot_id)
    realized = sum((p.realized_pnl for p in positions), Decimal(0))
    unrealized = sum((p.unrealized_pnl for p in positions), Decimal(0))
    publish(kind="heartbeat", bot_id=bot_id, data={})
    publish(
        kind="pnl",
        bot_id=bot_id,
        data={
            "realized": _num(realized),
            "unrealized": _num(unrealized),
            "total": _num(realized + unrealized),
            "equity": _num(equity),
            "prices": {symbol: _num(price) for symbol, price in (prices or {}).items()},
        },
    )
