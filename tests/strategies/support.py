"""Builders shared by the strategy tests: market views, resting orders, and the hypothesis settings."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from hypothesis import settings

from apps.strategies.base import MarketView, OpenOrder, OrderIntent
from apps.trading.ids import client_order_id

SYMBOL = "BTC/USDT"
BOT_ID = 7
# Bounded and reproducible: the same examples on every run, nothing stored between runs.
PROPERTY = settings(max_examples=50, deadline=None, derandomize=True, database=None)


def D(value: str | int) -> Decimal:
    return Decimal(value)


def view(
    price: str | Decimal,
    *,
    closes: tuple[Decimal, ...] = (),
    position: str | Decimal = "0",
    entry: str | Decimal | None = None,
    open_orders: tuple[OpenOrder, ...] = (),
    quote_free: str | Decimal = "1000000",
) -> MarketView:
    return MarketView(
        symbol=SYMBOL,
        price=Decimal(price),
        closes=closes,
        base_position=Decimal(position),
        average_entry=None if entry is None else Decimal(entry),
        open_orders=open_orders,
        quote_free=Decimal(quote_free),
    )


def resting(intent: OrderIntent, generation: int = 0) -> OpenOrder:
    """The open order the tick would have made of `intent`, with the client order id the gate derives."""
    return OpenOrder(client_order_id(BOT_ID, intent.tag, generation), intent.side, intent.price, intent.amount)


def summary(intents: list[OrderIntent]) -> list[tuple[str, str, Decimal | None, Decimal, str]]:
    """(side, type, price, amount, tag) of each intent, in the order proposed."""
    return [(i.side, i.type, i.price, i.amount, i.tag) for i in intents]


def tags(intents: list[OrderIntent]) -> list[str]:
    return [i.tag for i in intents]


def state_roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """The state as the tick stores it between ticks (a JSON column) and hands it back."""
    loaded: dict[str, Any] = json.loads(json.dumps(state, cls=DjangoJSONEncoder))
    return loaded
