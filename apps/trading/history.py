"""Trade history: the fleet's fills and orders, filtered, keyset-paginated, totalled and exported.

Pages go by (time, id), newest first: a page is "rows before this (time, id), newest first, LIMIT n+1";
nothing counts the table for paging or skips rows with OFFSET, so a deep page costs what the first one
does. Orders have an index on created_at (and on bot, created_at); fills have none on their timestamp
yet, so a fills page sorts the matching fills (an index on (timestamp, id) would make it an index range).
A fill's time is the exchange's trade time; an order's is when the console created it.

The totals are aggregates over every matching row (a SUM/COUNT per symbol or fee currency): their cost
grows with the filtered set, not with the page.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from django.db.models import Count, DecimalField, ExpressionWrapper, F, Model, Q, QuerySet, Sum

from apps.bots.models import Bot
from apps.core.words import ORDER_STATUSES
from apps.trading.ledger import split_symbol
from apps.trading.models import Fill, Order, Position

PAGE_SIZE = 50
EXPORT_BATCH = 2000
ZERO = Decimal(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Row = TypeVar("Row", bound=Model)


@dataclass(frozen=True)
class TradeFilters:
    bot_id: int | None = None
    symbol: str = ""
    side: str = ""  # "buy" / "sell"
    status: str = ""  # orders only
    mode: str = ""  # "paper" / "live": the order's own mode when it was placed
    since: datetime | None = None  # time >= since
    until: datetime | None = None  # time < until

    def as_audit_data(self) -> dict[str, Any]:
        """The filters as they go into the audit entry of an export (only those given)."""
        values: dict[str, Any] = {
            "bot": self.bot_id,
            "symbol": self.symbol,
            "side": self.side,
            "status": self.status,
            "mode": self.mode,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
        }
        return {k: v for k, v in values.items() if v}


# -- cursors ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """A row's place in the (time, id) order; written in links as "<microseconds since 1970>_<id>"."""

    at: datetime
    id: int

    def __str__(self) -> str:
        delta = self.at - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}_{self.id}"

    @classmethod
    def parse(cls, micros: int, row_id: int) -> Cursor:
        seconds, rest = divmod(micros, 1_000_000)
        return cls(datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=rest), row_id)


def _after(time_field: str, cursor: Cursor, *, inclusive: bool = False) -> Q:
    """Rows later than the cursor in (time, id) order (or at it, when inclusive)."""
    same = {time_field: cursor.at, "id__gte" if inclusive else "id__gt": cursor.id}
    return Q(**{f"{time_field}__gt": cursor.at}) | Q(**same)


def _before(time_field: str, cursor: Cursor, *, inclusive: bool = False) -> Q:
    same = {time_field: cursor.at, "id__lte" if inclusive else "id__lt": cursor.id}
    return Q(**{f"{time_field}__lt": cursor.at}) | Q(**same)


@dataclass(frozen=True)
class HistoryPage(Generic[Row]):
    rows: list[Row]
    newer_cursor: Cursor | None  # pass as `after` for the newer page
    older_cursor: Cursor | None  # pass as `before` for the older page


def _page(
    qs: QuerySet[Row], time_field: str, *, before: Cursor | None, after: Cursor | None, size: int
) -> HistoryPage[Row]:
    def cursor_of(row: Row) -> Cursor:
        return Cursor(getattr(row, time_field), int(row.pk))

    if after is not None:
        rows = list(qs.filter(_after(time_field, after)).order_by(time_field, "id")[: size + 1])
        more_newer = len(rows) > size
        shown = rows[:size][::-1]
        more_older = qs.filter(_before(time_field, after, inclusive=True)).exists()
    else:
        window = qs.filter(_before(time_field, before)) if before is not None else qs
        rows = list(window.order_by(f"-{time_field}", "-id")[: size + 1])
        more_older = len(rows) > size
        shown = rows[:size]
        more_newer = before is not None and qs.filter(_after(time_field, before, inclusive=True)).exists()
    if not shown:
        # An empty window (a cursor past either end): offer the way back, not a dead end.
        return HistoryPage(
            [],
            newer_cursor=Cursor(before.at, before.id - 1) if more_newer and before is not None else None,
            older_cursor=Cursor(after.at, after.id + 1) if more_older and after is not None else None,
        )
    return HistoryPage(
        shown,
        newer_cursor=cursor_of(shown[0]) if more_newer else None,
        older_cursor=cursor_of(shown[-1]) if more_older else None,
    )


# -- fills -----------------------------------------------------------------------------------------


def _filtered(qs: QuerySet[Any], filters: TradeFilters, *, order: str, at: str) -> QuerySet[Any]:
    """`qs` narrowed by the filters; `order` reaches the order's fields ("" or "order__"), `at` is the time field."""
    if filters.bot_id is not None:
        qs = qs.filter(**{f"{order}bot_id": filters.bot_id})
    if filters.symbol:
        qs = qs.filter(**{f"{order}symbol": filters.symbol})
    if filters.side:
        qs = qs.filter(**{f"{order}side": filters.side})
    if filters.mode:
        qs = qs.filter(**{f"{order}paper": filters.mode == Bot.Mode.PAPER})
    if filters.since:
        qs = qs.filter(**{f"{at}__gte": filters.since})
    if filters.until:
        qs = qs.filter(**{f"{at}__lt": filters.until})
    return qs


def fills_matching(filters: TradeFilters) -> QuerySet[Fill]:
    """Fills matching the filters, unordered (status does not apply to fills)."""
    return _filtered(Fill.objects.all(), filters, order="order__", at="timestamp")


def fills_page(
    filters: TradeFilters, *, before: Cursor | None = None, after: Cursor | None = None, size: int = PAGE_SIZE
) -> HistoryPage[Fill]:
    qs = fills_matching(filters).select_related("order", "order__bot")
    return _page(qs, "timestamp", before=before, after=after, size=size)


def _money(per_currency: dict[str, Decimal]) -> list[tuple[str, Decimal]]:
    return sorted((unit, amount) for unit, amount in per_currency.items())


@dataclass(frozen=True)
class FillTotals:
    fills: int
    volume: list[tuple[str, Decimal]]  # (quote currency, sum of price x amount)
    fees: list[tuple[str, Decimal]]  # (fee currency, sum of fees); "" for fills without one
    realized: list[tuple[str, Decimal]] | None  # (quote currency, realized PnL); None when not meaningful
    realized_covers: str  # what the realized PnL total covers, or why it is not shown


def fill_totals(filters: TradeFilters) -> FillTotals:
    """Totals of every fill matching the filters (not only the page shown)."""
    qs = fills_matching(filters)
    notional = ExpressionWrapper(F("price") * F("amount"), output_field=DecimalField(max_digits=40, decimal_places=24))
    volume: dict[str, Decimal] = defaultdict(lambda: ZERO)
    count = 0
    for row in qs.values("order__symbol").annotate(volume=Sum(notional), n=Count("id")).order_by():
        volume[split_symbol(row["order__symbol"])[1]] += row["volume"] or ZERO
        count += row["n"]
    fees: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for row in qs.values("fee_currency").annotate(total=Sum("fee")).order_by():
        if row["total"]:
            fees[row["fee_currency"]] += row["total"]
    realized, covers = _realized(filters)
    return FillTotals(count, _money(volume), _money(fees), realized, covers)


def _realized(filters: TradeFilters) -> tuple[list[tuple[str, Decimal]] | None, str]:
    # A position keeps one running realized PnL per bot and symbol since its first fill: it cannot be
    # split by side, mode or time, so with any of those filters a total would not belong to the fills shown.
    if filters.side or filters.mode or filters.since or filters.until:
        return None, "Realized PnL is not shown with a side, mode or time filter: positions keep one running total."
    positions = Position.objects.all()
    if filters.bot_id is not None:
        positions = positions.filter(bot_id=filters.bot_id)
    if filters.symbol:
        positions = positions.filter(symbol=filters.symbol)
    realized: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for row in positions.values("symbol").annotate(total=Sum("realized_pnl")).order_by():
        realized[split_symbol(row["symbol"])[1]] += row["total"] or ZERO
    who = "this bot's positions" if filters.bot_id is not None else "every bot's positions (archived ones too)"
    what = f" in {filters.symbol}" if filters.symbol else ""
    return _money(realized), f"Realized PnL: all time, of {who}{what}, before fees."


# -- orders ----------------------------------------------------------------------------------------


def orders_matching(filters: TradeFilters) -> QuerySet[Order]:
    qs = _filtered(Order.objects.all(), filters, order="", at="created_at")
    return qs.filter(status=filters.status) if filters.status else qs


def orders_page(
    filters: TradeFilters, *, before: Cursor | None = None, after: Cursor | None = None, size: int = PAGE_SIZE
) -> HistoryPage[Order]:
    return _page(orders_matching(filters).select_related("bot"), "created_at", before=before, after=after, size=size)


@dataclass(frozen=True)
class OrderTotals:
    orders: int
    by_status: list[tuple[str, int]] = field(default_factory=list)  # (status label, count)
    placed: list[tuple[str, Decimal]] = field(default_factory=list)  # (quote, sum of notional when placed)


def order_totals(filters: TradeFilters) -> OrderTotals:
    qs = orders_matching(filters)
    labels = ORDER_STATUSES
    placed: dict[str, Decimal] = defaultdict(lambda: ZERO)
    by_status: dict[str, int] = defaultdict(int)
    for row in qs.values("symbol", "status").annotate(notional=Sum("notional"), n=Count("id")).order_by():
        placed[split_symbol(row["symbol"])[1]] += row["notional"] or ZERO
        by_status[row["status"]] += row["n"]
    statuses = [(labels.get(s, s), n) for s, n in sorted(by_status.items())]
    return OrderTotals(sum(by_status.values()), statuses, _money(placed))


# -- export ----------------------------------------------------------------------------------------


def history_head(kind: str) -> int:
    """The newest row id of fills or orders: an export covers the rows up to it (those present when it began)."""
    model: type[Fill] | type[Order] = Fill if kind == "fills" else Order
    return model.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _batches(qs: QuerySet[Row], time_field: str, *, upto: int, batch: int) -> Iterator[list[Row]]:
    qs = qs.filter(id__lte=upto).order_by(time_field, "id")
    last: Cursor | None = None
    while True:
        window = qs.filter(_after(time_field, last)) if last is not None else qs
        rows = list(window[:batch])
        if not rows:
            return
        last = Cursor(getattr(rows[-1], time_field), int(rows[-1].pk))
        yield rows


def fill_export_batches(filters: TradeFilters, *, upto: int, batch: int = EXPORT_BATCH) -> Iterator[list[Fill]]:
    """Every matching fill up to id `upto`, oldest first, in keyset batches (constant memory)."""
    qs = fills_matching(filters).select_related("order", "order__bot")
    return _batches(qs, "timestamp", upto=upto, batch=batch)


def order_export_batches(filters: TradeFilters, *, upto: int, batch: int = EXPORT_BATCH) -> Iterator[list[Order]]:
    qs = orders_matching(filters).select_related("bot")
    return _batches(qs, "created_at", upto=upto, batch=batch)


FILL_EXPORT_FIELDS = (
    "time",
    "fill_id",
    "trade_id",
    "bot_id",
    "bot",
    "mode",
    "symbol",
    "side",
    "price",
    "amount",
    "quote_volume",
    "quote",
    "fee",
    "fee_currency",
    "order_id",
    "client_order_id",
)
ORDER_EXPORT_FIELDS = (
    "time",
    "order_id",
    "client_order_id",
    "exchange_order_id",
    "bot_id",
    "bot",
    "mode",
    "symbol",
    "side",
    "type",
    "price",
    "amount",
    "filled",
    "average",
    "notional",
    "quote",
    "status",
    "error",
)


def fill_record(fill: Fill) -> dict[str, Any]:
    order = fill.order
    return {
        "time": fill.timestamp.astimezone(UTC).isoformat(),
        "fill_id": fill.pk,
        "trade_id": fill.trade_id,
        "bot_id": order.bot_id,
        "bot": order.bot.name,
        "mode": "paper" if order.paper else "live",
        "symbol": order.symbol,
        "side": order.side,
        "price": format(fill.price.normalize(), "f"),
        "amount": format(fill.amount.normalize(), "f"),
        "quote_volume": format((fill.price * fill.amount).normalize(), "f"),
        "quote": split_symbol(order.symbol)[1],
        "fee": format(fill.fee.normalize(), "f"),
        "fee_currency": fill.fee_currency,
        "order_id": order.pk,
        "client_order_id": order.client_order_id,
    }


def _plain(value: Decimal | None) -> str:
    return "" if value is None else format(value.normalize(), "f")


def order_record(order: Order) -> dict[str, Any]:
    return {
        "time": order.created_at.astimezone(UTC).isoformat(),
        "order_id": order.pk,
        "client_order_id": order.client_order_id,
        "exchange_order_id": order.exchange_order_id or "",
        "bot_id": order.bot_id,
        "bot": order.bot.name,
        "mode": "paper" if order.paper else "live",
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "price": _plain(order.price),
        "amount": _plain(order.amount),
        "filled": _plain(order.filled),
        "average": _plain(order.average),
        "notional": _plain(order.notional),
        "quote": split_symbol(order.symbol)[1],
        "status": order.status,
        "error": order.error,
    }


def bot_choices() -> list[tuple[int, str]]:
    """Every bot (archived ones too: their trades stay in the history), by name, for the filter."""
    return [
        (pk, f"{name} (archived)" if archived else name)
        for pk, name, archived in Bot.objects.order_by("name").values_list("id", "name", "archived_at")
    ]
