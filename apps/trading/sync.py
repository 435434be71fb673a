"""Bringing the database's view of a live bot's orders and fills up to date with the exchange.

Also the orders the exchange took but the database lost: the gate sends an order inside the transaction
that stores its row (so that a halt waits for it), so when the database fails before that transaction
commits (restarted, unreachable), the order rests on the exchange with no row. The worker that sent it
remembers it in memory (`order_unrecorded`) and, on its next tick, looks it up by its client order id and
records it (`orders_sync`), before its strategy decides anything. An order only this worker could have
sent is recovered; anything else the account holds stays foreign (reconciliation alerts on it).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from apps.audit.services import record
from apps.bots.halts import actor_of
from apps.bots.models import Bot
from apps.exchanges import port
from apps.trading import events
from apps.trading.ledger import fill_record, ledger_for
from apps.trading.models import BotLedger, Fill, Order

logger = logging.getLogger(__name__)
# Trades are re-read from a little before the newest stored one: exchanges may publish a trade a
# moment after a later one. Re-read trades are dropped by the unique (account, trade id) constraint.
FILL_OVERLAP_MS = 60_000
TRADES_PAGE = 1000
MAX_PAGES = 20

_STATUS = {
    "closed": Order.Status.FILLED,
    "canceled": Order.Status.CANCELED,
    "expired": Order.Status.EXPIRED,
    "rejected": Order.Status.REJECTED,
}


def order_apply_exchange(order: Order, remote: port.RemoteOrder) -> bool:
    """Copy the exchange's view of an order onto our row; returns whether anything changed (and saves)."""
    filled = remote.filled or order.filled
    status = _STATUS.get(remote.status)
    if status is None:  # "open"
        status = Order.Status.PARTIALLY_FILLED if filled > 0 else Order.Status.OPEN
    average = remote.average or order.average
    if order.type == Order.Type.LIMIT and remote.price and remote.price != order.price:
        # The exchange rounds to its tick size; keep what it actually rests at.
        order.price = remote.price
        Order.objects.filter(pk=order.pk).update(price=remote.price)
    exchange_id = remote.id or order.exchange_order_id
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


def trade_record(order: Order, trade: port.RemoteTrade) -> Fill | None:
    """Store one of the exchange's trades of our order (once: None when it was stored already)."""
    return fill_record(
        order=order,
        trade_id=trade.id,
        price=trade.price,
        amount=trade.amount,
        fee=trade.fee,
        fee_currency=trade.fee_currency,
        timestamp=dt.datetime.fromtimestamp(trade.at_ms / 1000, tz=dt.UTC),
    )


def never_received(order: Order) -> None:
    """The exchange does not know an order we never got an id for: it never arrived."""
    order.status, order.error = Order.Status.REJECTED, "The exchange never received this order."
    order.save(update_fields=["status", "error", "updated_at"])
    events.order_update(order)


@dataclass
class SyncResult:
    orders_updated: int = 0
    new_fills: int = 0
    errors: list[str] = field(default_factory=list)


def _sync_orders(bot: Bot, exchange: port.Exchange, symbol: str, result: SyncResult) -> None:
    ours = list(Order.objects.filter(bot=bot, symbol=symbol, paper=False, status__in=Order.OPEN_STATUSES))
    if not ours:
        return
    remote = {o.client_order_id: o for o in exchange.open_orders(symbol)}
    for order in ours:
        found = remote.get(order.client_order_id)
        if found is None:
            # Not open on the exchange any more (filled, canceled, expired) or never arrived.
            try:
                found = exchange.order(symbol=symbol, client_order_id=order.client_order_id)
            except port.OrderNotFound:
                if order.exchange_order_id is None:
                    never_received(order)
                    result.orders_updated += 1
                continue
        result.orders_updated += order_apply_exchange(order, found)


def _sync_fills(bot: Bot, exchange: port.Exchange, symbol: str, ledger: BotLedger, result: SyncResult) -> int | None:
    """Store the bot's new trades in `symbol`; returns the newest trade time seen (ms)."""
    start = ledger.last_fill_ms
    if start is None:
        first = Order.objects.filter(bot=bot, symbol=symbol, paper=False).order_by("created_at").first()
        if first is None:
            return None
        start = int(first.created_at.timestamp() * 1000)
    since, newest = start - FILL_OVERLAP_MS, None
    for _ in range(MAX_PAGES):
        trades = exchange.trades(symbol, since_ms=since, limit=TRADES_PAGE)
        by_exchange_id = {
            o.exchange_order_id: o
            for o in Order.objects.filter(
                bot=bot, paper=False, exchange_order_id__in={t.order_id for t in trades}
            ).select_related("bot")
        }
        for trade in trades:
            order = by_exchange_id.get(trade.order_id)
            if order is None:
                continue  # another bot's (or someone else's) trade on this account
            result.new_fills += trade_record(order, trade) is not None
            newest = max(newest or 0, trade.at_ms)
        if len(trades) < TRADES_PAGE:
            break
        since = trades[-1].at_ms
    return newest


# Orders this process sent whose transaction did not commit, by client order id: their fields as the gate
# made them. Per process (a bot worker runs one bot); never a secret in them.
_unrecorded: dict[str, dict[str, Any]] = {}
_unrecorded_lock = threading.Lock()
_ORDER_FIELDS = (
    "bot_id",
    "account_id",
    "symbol",
    "side",
    "type",
    "amount",
    "price",
    "notional",
    "client_order_id",
    "intent_tag",
    "generation",
    "created_at",
)


def order_unrecorded(order: Order) -> None:
    """The gate sent `order` (or tried to) and its row was rolled back: recover it on the bot's next sync."""
    with _unrecorded_lock:
        _unrecorded[order.client_order_id] = {name: getattr(order, name) for name in _ORDER_FIELDS}
    logger.warning("bot %s: order %s was sent but not recorded; recovering it", order.bot_id, order.client_order_id)


def _recover_unrecorded(bot: Bot, exchange: port.Exchange, result: SyncResult) -> None:
    with _unrecorded_lock:
        pending = [dict(f) for f in _unrecorded.values() if f["bot_id"] == bot.pk]
    for fields in pending:
        cid = fields["client_order_id"]
        if not Order.objects.filter(client_order_id=cid).exists():
            try:
                remote = exchange.order(symbol=fields["symbol"], client_order_id=cid)
            except port.OrderNotFound:
                remote = None  # it never arrived: nothing to record
            if remote is not None:
                _record_recovered(bot, fields, remote)
                result.orders_updated += 1
        with _unrecorded_lock:
            _unrecorded.pop(cid, None)


def _record_recovered(bot: Bot, fields: dict[str, Any], remote: port.RemoteOrder) -> None:
    with transaction.atomic():
        order = Order.objects.create(**fields, paper=False, exchange_order_id=remote.id)
        order_apply_exchange(order, remote)
        record(
            actor=actor_of(bot),
            action="order.recovered",
            target=order,
            data={
                "bot": bot.pk,
                "client_order_id": order.client_order_id,
                "exchange_order_id": order.exchange_order_id,
                "status": order.status,
                "note": "the exchange took this order; its row was lost with the database transaction",
            },
        )
        events.order_new(order)


def orders_sync(*, bot: Bot, exchange: port.Exchange) -> SyncResult:
    """Poll the exchange for the bot's open orders and new fills; idempotent (polling twice stores nothing new).
    First, the orders this process sent whose rows were lost (see the module docstring)."""
    result = SyncResult()
    _recover_unrecorded(bot, exchange, result)
    ledger = ledger_for(bot)
    symbols = set(bot.symbols) | set(
        Order.objects.filter(bot=bot, paper=False, status__in=Order.OPEN_STATUSES).values_list("symbol", flat=True)
    )
    newest: int | None = None
    for symbol in sorted(symbols):
        _sync_orders(bot, exchange, symbol, result)
        seen = _sync_fills(bot, exchange, symbol, ledger, result)
        if seen is not None:
            newest = max(newest or 0, seen)
    if newest is not None and (ledger.last_fill_ms is None or newest > ledger.last_fill_ms):
        BotLedger.objects.filter(pk=ledger.pk).update(last_fill_ms=newest)
    return result
