"""Bringing the database's view of a live bot's orders and fills up to date with the exchange."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.bots.models import Bot
from apps.exchanges import clients
from apps.trading import events
from apps.trading.ledger import fill_record, ledger_for
from apps.trading.models import BotLedger, Order

logger = logging.getLogger(__name__)
# Trades are re-read from a little before the newest stored one: exchanges may publish a trade a
# moment after a later one. Re-read trades are dropped by the unique (account, trade id) constraint.
FILL_OVERLAP_MS = 60_000
TRADES_PAGE = 1000
MAX_PAGES = 20

_STATUS = {
    "closed": Order.Status.FILLED,
    "canceled": Order.Status.CANCELED,
    "cancelled": Order.Status.CANCELED,
    "expired": Order.Status.EXPIRED,
    "rejected": Order.Status.REJECTED,
}


def dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def order_apply_exchange(order: Order, raw: dict[str, Any]) -> bool:
    """Copy the exchange's view of an order onto our row; returns whether anything changed (and saves)."""
    filled = dec(raw.get("filled")) or order.filled
    status = _STATUS.get(str(raw.get("status")))
    if status is None:  # "open"
        status = Order.Status.PARTIALLY_FILLED if filled > 0 else Order.Status.OPEN
    average = dec(raw.get("average")) if raw.get("average") else order.average
    if order.type == Order.Type.LIMIT and raw.get("price"):
        # The exchange rounds to its tick size; keep what it actually rests at.
        exchange_price = dec(raw["price"])
        if exchange_price != order.price:
            order.price = exchange_price
            Order.objects.filter(pk=order.pk).update(price=exchange_price)
    exchange_id = str(raw["id"]) if raw.get("id") is not None else order.exchange_order_id
    changed = (order.status, order.filled, order.average, order.exchange_order_id) != (
        status,
        filled,
        average,
        exchange_id,
    )
    if changed:
        order.status, order.filled, order.average, order.exchange_order_id = status, filled, average, exchange_id
        order.save(update_fields=["status", "filled", "average", "exchange_order_id", "updated_at"])
        events.order_update(order)
    return changed


def ticker_price(client: Any, symbol: str) -> Decimal:
    """The market price now: the middle of the book's top, else the last trade.

    Not the last trade first: on a quiet market it can lag the book by far (after a gap, say).
    """
    ticker: dict[str, Any] = clients.call(client.fetch_ticker, symbol)
    bid, ask = ticker.get("bid"), ticker.get("ask")
    if bid and ask:
        return (Decimal(str(bid)) + Decimal(str(ask))) / 2
    last = ticker.get("last") or ticker.get("close")
    if last is None:
        raise clients.ExchangeError(f"No price for {symbol}.")
    return Decimal(str(last))


def fetch_by_client_id(client: Any, symbol: str, cid: str) -> dict[str, Any]:
    """The exchange's order with our client order id (Binance: origClientOrderId). Raises OrderNotFound."""
    raw: dict[str, Any] = clients.call(client.fetch_order, "", symbol, {"origClientOrderId": cid})
    return raw


@dataclass
class SyncResult:
    orders_updated: int = 0
    new_fills: int = 0
    errors: list[str] = field(default_factory=list)


def _sync_orders(bot: Bot, client: Any, symbol: str, result: SyncResult) -> None:
    ours = list(Order.objects.filter(bot=bot, symbol=symbol, paper=False, status__in=Order.OPEN_STATUSES))
    if not ours:
        return
    remote = {o.get("clientOrderId"): o for o in clients.call(client.fetch_open_orders, symbol)}
    for order in ours:
        raw = remote.get(order.client_order_id)
        if raw is None:
            # Not open on the exchange any more (filled, canceled, expired) or never arrived.
            try:
                raw = fetch_by_client_id(client, symbol, order.client_order_id)
            except clients.OrderNotFound:
                if order.exchange_order_id is None:
                    order.status, order.error = Order.Status.REJECTED, "The exchange never received this order."
                    order.save(update_fields=["status", "error", "updated_at"])
                    events.order_update(order)
                    result.orders_updated += 1
                continue
        result.orders_updated += order_apply_exchange(order, raw)


def _sync_fills(bot: Bot, client: Any, symbol: str, ledger: BotLedger, result: SyncResult) -> int | None:
    """Store the bot's new trades in `symbol`; returns the newest trade time seen (ms)."""
    start = ledger.last_fill_ms
    if start is None:
        first = Order.objects.filter(bot=bot, symbol=symbol, paper=False).order_by("created_at").first()
        if first is None:
            return None
        start = int(first.created_at.timestamp() * 1000)
    since, newest = start - FILL_OVERLAP_MS, None
    for _ in range(MAX_PAGES):
        trades: list[dict[str, Any]] = clients.call(client.fetch_my_trades, symbol, since, TRADES_PAGE)
        by_exchange_id = {
            o.exchange_order_id: o
            for o in Order.objects.filter(
                bot=bot, paper=False, exchange_order_id__in={str(t.get("order")) for t in trades}
            ).select_related("bot")
        }
        for trade in trades:
            order = by_exchange_id.get(str(trade.get("order")))
            if order is None:
                continue  # another bot's (or someone else's) trade on this account
            fee = trade.get("fee") or {}
            stored = fill_record(
                order=order,
                trade_id=str(trade["id"]),
                price=Decimal(str(trade["price"])),
                amount=Decimal(str(trade["amount"])),
                fee=Decimal(str(fee.get("cost") or 0)),
                fee_currency=str(fee.get("currency") or ""),
                timestamp=dt.datetime.fromtimestamp(int(trade["timestamp"]) / 1000, tz=dt.UTC),
            )
            result.new_fills += stored is not None
            newest = max(newest or 0, int(trade["timestamp"]))
        if len(trades) < TRADES_PAGE:
            break
        since = int(trades[-1]["timestamp"])
    return newest


def orders_sync(*, bot: Bot, client: Any) -> SyncResult:
    """Poll the exchange for the bot's open orders and new fills; idempotent (polling twice stores nothing new)."""
    result = SyncResult()
    ledger = ledger_for(bot)
    symbols = set(bot.symbols) | set(
        Order.objects.filter(bot=bot, paper=False, status__in=Order.OPEN_STATUSES).values_list("symbol", flat=True)
    )
    newest: int | None = None
    for symbol in sorted(symbols):
        _sync_orders(bot, client, symbol, result)
        seen = _sync_fills(bot, client, symbol, ledger, result)
        if seen is not None:
            newest = max(newest or 0, seen)
    if newest is not None and (ledger.last_fill_ms is None or newest > ledger.last_fill_ms):
        BotLedger.objects.filter(pk=ledger.pk).update(last_fill_ms=newest)
    return result
