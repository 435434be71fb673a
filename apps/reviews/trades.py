"""A review's trades and PnL: per bot, mode and symbol, replayed with the ledger's own arithmetic."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Count, Max, Q

from apps.bots.models import Bot
from apps.reviews.figures import STORED, num
from apps.reviews.periods import Period
from apps.trading.ledger import _apply, split_symbol
from apps.trading.models import ZERO, Fill, Order, Position

REPLAY_BATCH = 5000


@dataclass
class _Row:
    bot_id: int
    bot: str
    mode: str
    symbol: str
    orders: int = 0
    fills: int = 0
    buys: int = 0
    sells: int = 0
    bought: Decimal = ZERO
    sold: Decimal = ZERO
    buy_value: Decimal = ZERO
    sell_value: Decimal = ZERO
    fees: Decimal = ZERO
    realized_pnl: Decimal = ZERO

    def as_dict(self) -> dict[str, Any]:
        base, quote = split_symbol(self.symbol)
        return {
            "bot_id": self.bot_id,
            "bot": self.bot,
            "mode": self.mode,
            "symbol": self.symbol,
            "base": base,
            "quote": quote,
            "orders": self.orders,
            "fills": self.fills,
            "buys": self.buys,
            "sells": self.sells,
            "bought": num(self.bought),
            "sold": num(self.sold),
            "buy_value": num(self.buy_value),
            "sell_value": num(self.sell_value),
            "fees": num(self.fees),
            "realized_pnl": num(self.realized_pnl),
        }


def _stored(position: Position) -> None:
    # The ledger saves the position after every fill, rounding to the column's 12 places; the
    # replay rounds the same way, so its running figures are the ones the ledger computed.
    for name in ("base_quantity", "realized_pnl", "fees_quote"):
        setattr(position, name, getattr(position, name).quantize(STORED, rounding=ROUND_HALF_UP))
    if position.average_entry is not None:
        position.average_entry = position.average_entry.quantize(STORED, rounding=ROUND_HALF_UP)


def _replay(bot_ids: set[int], last_id: int) -> Iterator[tuple[Any, ...]]:
    """The bots' fills up to #last_id in id order, as (bot_id, paper, symbol, side, price, amount, fee,
    fee_currency, timestamp), in keyset batches: constant memory, and no query joins fills to orders
    over a range (with stale statistics PostgreSQL was measured looping over one for each of them)."""
    accounts = set(Bot.objects.filter(pk__in=bot_ids).values_list("account_id", flat=True))
    fills = (
        Fill.objects.filter(account_id__in=accounts, id__lte=last_id)
        .order_by("id")
        .values_list("id", "order_id", "price", "amount", "fee", "fee_currency", "timestamp")
    )
    after = 0
    while batch := list(fills.filter(id__gt=after)[:REPLAY_BATCH]):
        orders = {
            pk: rest
            for pk, *rest in Order.objects.filter(pk__in={f[1] for f in batch}, bot_id__in=bot_ids).values_list(
                "pk", "bot_id", "paper", "symbol", "side"
            )
        }
        for _, order_id, *values in batch:
            if order_id in orders:  # not another bot's fill on a shared account
                yield (*orders[order_id], *values)
        after = batch[-1][0]


def trade_rows(period: Period) -> list[_Row]:
    """Per bot, mode and symbol: the period's orders and fills, and the PnL its fills realized.

    A fill's realized PnL depends on the average entry built by every earlier fill, so each bot's
    fills are replayed in the order the ledger applied them (by id), with the ledger's own
    arithmetic, from its first fill to the last fill of the period; only the period's fills count.
    """
    in_period = Q(timestamp__gte=period.start, timestamp__lt=period.end)
    fills = Fill.objects.filter(in_period)
    orders = Order.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
    filled_orders = set(fills.values_list("order_id", flat=True))
    bot_ids = set(Order.objects.filter(pk__in=filled_orders).values_list("bot_id", flat=True))
    bot_ids |= set(orders.values_list("bot_id", flat=True))
    names = dict(Bot.objects.filter(pk__in=bot_ids).values_list("pk", "name"))
    rows: dict[tuple[int, bool, str], _Row] = {}

    def row(bot_id: int, paper: bool, symbol: str) -> _Row:
        key = (bot_id, paper, symbol)
        if key not in rows:
            rows[key] = _Row(bot_id, names.get(bot_id, f"bot {bot_id}"), "paper" if paper else "live", symbol)
        return rows[key]

    counted = orders.order_by().values("bot_id", "paper", "symbol").annotate(n=Count("id"))
    for c in counted:
        row(c["bot_id"], c["paper"], c["symbol"]).orders += c["n"]

    last_id = fills.aggregate(m=Max("id"))["m"]
    if last_id is None:
        return list(rows.values())
    positions: dict[tuple[int, str], Position] = {}
    for fill_row in _replay(bot_ids, last_id):
        bot_id, paper, symbol, side, price, amount, fee, fee_currency, timestamp = fill_row
        position = positions.get((bot_id, symbol))
        if position is None:
            position = positions[bot_id, symbol] = Position(bot_id=bot_id, symbol=symbol)
        realized_before, fees_before = position.realized_pnl, position.fees_quote
        _apply(position, side=side, price=price, amount=amount, fee=fee, fee_currency=fee_currency)
        _stored(position)
        if not period.start <= timestamp < period.end:
            continue
        r = row(bot_id, paper, symbol)
        r.fills += 1
        r.realized_pnl += position.realized_pnl - realized_before
        r.fees += position.fees_quote - fees_before
        if side == Order.Side.BUY:
            r.buys, r.bought, r.buy_value = r.buys + 1, r.bought + amount, r.buy_value + price * amount
        else:
            r.sells, r.sold, r.sell_value = r.sells + 1, r.sold + amount, r.sell_value + price * amount
    return list(rows.values())


def pnl_tables(rows: Iterable[_Row]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per bot (and quote currency), and totals per mode and quote currency: amounts in different
    currencies are never added together."""
    per_bot: dict[tuple[Any, ...], dict[str, Any]] = {}
    totals: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        quote = split_symbol(r.symbol)[1]
        bot_entry = per_bot.setdefault((r.mode, r.bot, r.bot_id, quote), {"bot_id": r.bot_id, "bot": r.bot})
        total_entry = totals.setdefault((r.mode, quote), {})
        for entry in (bot_entry, total_entry):
            entry.setdefault("mode", r.mode)
            entry.setdefault("quote", quote)
            entry["fills"] = entry.get("fills", 0) + r.fills
            entry["fees"] = entry.get("fees", ZERO) + r.fees
            entry["realized_pnl"] = entry.get("realized_pnl", ZERO) + r.realized_pnl

    def out(table: dict[Any, dict[str, Any]]) -> list[dict[str, Any]]:
        order = sorted(table, key=lambda k: (k[0] != "live", *k[1:]))
        return [
            {**table[k], "fees": num(table[k]["fees"]), "realized_pnl": num(table[k]["realized_pnl"])} for k in order
        ]

    return out(per_bot), out(totals)
