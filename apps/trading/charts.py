"""What the charts draw: a bot's price candles with its fills, orders and grid levels, and PnL over time
(of one bot, of every bot, and of the fleet). The pages fetch it as JSON and keep it current from the live feed.

Prices are the exchange's candles, read through the exchange port with a public client (market data needs no
key; the web process never has one), kept a few seconds per (exchange, symbol, timeframe, size) so that pages
opened together cost the exchange one request.

**PnL over time.** The ledger keeps a bot's equity as last marked (BotLedger.last_equity), not its history, so
the line is derived from what is stored: the bot's fills are replayed in the order (timestamp, id) with the
ledger's own average-cost bookkeeping (`ledger.fill_replay`: fees, realized PnL, average entry), and at each
candle the positions held are marked at that candle's close:

    PnL(T) = realized PnL of the fills made before T's candle closed
             + sum over symbols of held(T) x (close(T) - average entry(T))

which is what the ledger would have shown at that close (own_equity is the bot's capital basis plus it). The
newest point is the forming candle, marked at the latest price. A symbol whose candles could not be read is
marked at its last known price (the previous close, else its last fill's price), and the answer says so.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.cache import cache

from apps.bots.models import Bot
from apps.core.input_validation import InputError, parse_id
from apps.exchanges import port
from apps.strategies import get_strategy
from apps.strategies.base import ParamError
from apps.trading.ledger import fill_replay, mark, quote_of
from apps.trading.models import ZERO, Fill, Order, Position

# The timeframes a chart offers, in seconds (every exchange ccxt knows has these).
TIMEFRAMES: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14_400, "1d": 86_400}
DEFAULT_TIMEFRAME = "1m"
DEFAULT_CANDLES = 300
MIN_CANDLES, MAX_CANDLES = 10, 1000  # Binance answers at most 1000 candles a request
# The dashboard's ranges: each a timeframe and how many of its candles.
RANGES: dict[str, tuple[str, int]] = {"6h": ("1m", 360), "24h": ("5m", 288), "7d": ("1h", 168), "30d": ("4h", 180)}
DEFAULT_RANGE = "24h"
# At most this many fills and orders drawn as markers (the newest): beyond that a chart is only ink.
MAX_MARKERS = 1000
CANDLES_CACHE_S = 5
FLEET_CACHE_S = 5
METHOD = (
    "PnL at each candle: the bot's fills replayed with the ledger's average-cost bookkeeping up to the candle's "
    "close, positions marked at its close (realized + unrealized, fees included)."
)


# -- what a request asks for -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChartQuery:
    symbol: str
    timeframe: str
    limit: int


def chart_query_parse(*, bot: Bot, params: Mapping[str, str]) -> ChartQuery:
    """`tf`, `symbol` and `limit` of a bot chart request, checked; InputError says what is wrong."""
    timeframe = params.get("tf") or DEFAULT_TIMEFRAME
    if timeframe not in TIMEFRAMES:
        raise InputError(f"`tf` must be one of {', '.join(TIMEFRAMES)}.")
    symbols = list(bot.symbols or [])
    symbol = params.get("symbol") or (symbols[0] if symbols else "")
    if symbol not in symbols:
        raise InputError(f"`symbol` must be one of the bot's symbols ({', '.join(symbols) or 'it has none'}).")
    limit = parse_id(params.get("limit"), name="limit", lo=MIN_CANDLES, hi=MAX_CANDLES, required=False)
    return ChartQuery(symbol, timeframe, limit or DEFAULT_CANDLES)


def chart_range_parse(params: Mapping[str, str]) -> str:
    """The dashboard's `range`, checked; InputError says what is wrong."""
    key = params.get("range") or DEFAULT_RANGE
    if key not in RANGES:
        raise InputError(f"`range` must be one of {', '.join(RANGES)}.")
    return key


# -- prices, through the port --------------------------------------------------------------------------------------

_local = threading.local()  # one public client per exchange and thread: a port.Exchange is not thread-safe


def _public(venue: str) -> port.Exchange:
    clients: dict[str, port.Exchange] = _local.__dict__.setdefault("clients", {})
    if venue not in clients:
        clients[venue] = port.Exchange(exchange_id=venue)
    return clients[venue]


def candles_of(venue: str, symbol: str, timeframe: str, limit: int) -> list[port.Candle]:
    """The last `limit` candles (the forming one last), from a few seconds' cache or the exchange.

    Raises port.ExchangeError when the exchange cannot be read.
    """
    key = f"charts:candles:{venue}:{symbol}:{timeframe}:{limit}"
    found: list[port.Candle] | None = cache.get(key)
    if found is None:
        try:
            found = _public(venue).candles(symbol, timeframe=timeframe, limit=limit)
        except port.ExchangeError:
            _local.__dict__.get("clients", {}).pop(venue, None)  # a fresh client next time
            raise
        cache.set(key, found, CANDLES_CACHE_S)
    return found


def _closes(
    venue: str, symbols: Iterable[str], timeframe: str, limit: int, notes: list[str]
) -> dict[str, dict[int, Decimal]]:
    """{symbol: {candle open ms: close}}; a symbol that cannot be read is left out, with a note why."""
    closes: dict[str, dict[int, Decimal]] = {}
    for symbol in sorted(set(symbols)):
        try:
            closes[symbol] = {c.at_ms: c.close for c in candles_of(venue, symbol, timeframe, limit)}
        except port.ExchangeError as exc:
            notes.append(f"No prices of {symbol} from {venue} ({exc.message}): marked at its last known price.")
    return closes


# -- PnL over time, replayed from the fills -------------------------------------------------------------------------


@dataclass(frozen=True)
class FillRow:
    at_ms: int
    symbol: str
    side: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str


FILL_FIELDS = ("order__bot_id", "timestamp", "order__symbol", "order__side", "price", "amount", "fee", "fee_currency")


def fill_rows(bot_ids: Sequence[int]) -> dict[int, list[FillRow]]:
    """Every fill of these bots, per bot, in the order the charts replay them (timestamp, id)."""
    rows: dict[int, list[FillRow]] = defaultdict(list)
    found = Fill.objects.filter(order__bot_id__in=bot_ids).order_by("timestamp", "id").values_list(*FILL_FIELDS)
    for bot_id, at, *rest in found.iterator(chunk_size=5000):
        rows[bot_id].append(FillRow(int(at.timestamp() * 1000), *rest))
    return rows


def pnl_points(
    fills: Sequence[FillRow], grid_ms: Sequence[int], tf_ms: int, closes: Mapping[str, Mapping[int, Decimal]]
) -> list[Decimal]:
    """The PnL at each candle of `grid_ms` (open times, ascending), as of its close (see the module's doc)."""
    books: dict[str, Position] = {}
    last_close: dict[str, Decimal] = {}
    points: list[Decimal] = []
    i = 0
    for at in grid_ms:
        while i < len(fills) and fills[i].at_ms < at + tf_ms:
            f = fills[i]
            book = books.setdefault(f.symbol, Position(symbol=f.symbol))
            fill_replay(book, side=f.side, price=f.price, amount=f.amount, fee=f.fee, fee_currency=f.fee_currency)
            i += 1
        for symbol, series in closes.items():
            if at in series:
                last_close[symbol] = series[at]
        total = ZERO
        for symbol, book in books.items():
            if symbol in last_close:
                mark(book, last_close[symbol])  # else it stays marked at its last fill's price
            total += book.realized_pnl + book.unrealized_pnl
        points.append(total)
    return points


def _seconds(ms: int) -> int:
    return ms // 1000


def _num(value: Decimal | None) -> float | None:
    # Floats for the chart library (it draws numbers); the pages' tables keep the exact figures.
    return None if value is None else float(value)


# -- a bot's chart -------------------------------------------------------------------------------------------------


def strategy_levels(bot: Bot) -> list[Decimal]:
    """The price levels the bot's strategy works on (a grid's levels), from its configuration; else none."""
    try:
        strategy_cls = get_strategy(bot.strategy)
        strategy = strategy_cls(strategy_cls.clean(bot.params))
    except (KeyError, ParamError):
        return []
    levels = getattr(strategy, "levels", None)
    return list(levels()) if callable(levels) else []


def _bucket(ms: int, tf_ms: int) -> int:
    return ms - ms % tf_ms


def _fill_markers(bot: Bot, symbol: str, since_ms: int, tf_ms: int) -> list[dict[str, Any]]:
    since = _aware(since_ms)
    fills = (
        Fill.objects.filter(order__bot=bot, order__symbol=symbol, timestamp__gte=since)
        .select_related("order")
        .order_by("-timestamp", "-id")[:MAX_MARKERS]
    )
    return [
        {
            "time": _seconds(_bucket(int(f.timestamp.timestamp() * 1000), tf_ms)),
            "at": f.timestamp.isoformat(),
            "trade_id": f.trade_id,
            "side": f.order.side,
            "price": _num(f.price),
            "amount": _num(f.amount),
        }
        for f in reversed(fills)
    ]


def _order_json(order: Order, tf_ms: int) -> dict[str, Any]:
    return {
        "id": order.pk,
        "time": _seconds(_bucket(int(order.created_at.timestamp() * 1000), tf_ms)),
        "side": order.side,
        "price": _num(order.price),
        "amount": _num(order.amount),
        "status": order.status,
    }


def _orders(bot: Bot, symbol: str, since_ms: int, tf_ms: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(limit orders placed in the window, newest MAX_MARKERS; every open order of the symbol)."""
    priced = Order.objects.filter(bot=bot, symbol=symbol, price__isnull=False)
    placed = priced.filter(created_at__gte=_aware(since_ms)).order_by("-created_at", "-id")[:MAX_MARKERS]
    still_open = priced.filter(status__in=Order.OPEN_STATUSES).order_by("price")
    return [_order_json(o, tf_ms) for o in reversed(placed)], [_order_json(o, tf_ms) for o in still_open]


def _aware(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def bot_chart(*, bot: Bot, query: ChartQuery) -> dict[str, Any]:
    """The bot page's chart: candles of one symbol, the bot's fills and orders on them, its grid levels and
    open orders as price lines, and its PnL (every symbol) at each candle."""
    venue, tf_ms, notes = bot.account.exchange_id, TIMEFRAMES[query.timeframe] * 1000, []
    try:
        candles = candles_of(venue, query.symbol, query.timeframe, query.limit)
    except port.ExchangeError as exc:
        candles = []
        notes.append(f"The candles of {query.symbol} could not be read from {venue}: {exc.message}")
    grid = [c.at_ms for c in candles]
    fills = fill_rows([bot.pk]).get(bot.pk, [])
    others = {f.symbol for f in fills} - {query.symbol}
    closes = {query.symbol: {c.at_ms: c.close for c in candles}}
    if grid:
        closes |= _closes(venue, others, query.timeframe, query.limit, notes)
    since_ms = grid[0] if grid else int(time.time() * 1000) - tf_ms * query.limit
    placed, still_open = _orders(bot, query.symbol, since_ms, tf_ms)
    return {
        "symbol": query.symbol,
        "symbols": list(bot.symbols or []),
        "timeframe": query.timeframe,
        "timeframes": list(TIMEFRAMES),
        "timeframe_s": tf_ms // 1000,
        "unit": quote_of(bot),
        "candles": [[_seconds(c.at_ms), *(_num(v) for v in (c.open, c.high, c.low, c.close))] for c in candles],
        "fills": _fill_markers(bot, query.symbol, since_ms, tf_ms),
        "orders": placed,
        "open_orders": still_open,
        "levels": [_num(level) for level in strategy_levels(bot)],
        "pnl": [[_seconds(at), _num(v)] for at, v in zip(grid, pnl_points(fills, grid, tf_ms, closes), strict=True)],
        "pnl_method": METHOD,
        "notes": notes,
        "at": int(time.time() * 1000),
    }


# -- the fleet's chart (dashboard) ------------------------------------------------------------------------------------


def fleet_chart(*, range_key: str) -> dict[str, Any]:
    """The dashboard's PnL over the range: the fleet's (the sum) and each bot's, on one grid of candle times.

    Every reader sees the same fleet, so it is computed once per few seconds and process, however many
    dashboards open meanwhile (its `at` says when: the pages apply the live events after it).
    """
    key = f"charts:fleet:{range_key}"
    found: dict[str, Any] | None = cache.get(key)
    if found is None:
        found = _fleet_chart(range_key)
        cache.set(key, found, FLEET_CACHE_S)
    return found


def _fleet_chart(range_key: str) -> dict[str, Any]:
    timeframe, count = RANGES[range_key]
    tf_ms = TIMEFRAMES[timeframe] * 1000
    now_ms = int(time.time() * 1000)
    end = _bucket(now_ms, tf_ms)
    grid = [end - (count - 1 - i) * tf_ms for i in range(count)]
    bots = list(Bot.objects.select_related("account").filter(archived_at__isnull=True).order_by("name"))
    fills = fill_rows([b.pk for b in bots])
    notes: list[str] = []
    closes: dict[str, dict[str, dict[int, Decimal]]] = {}
    for venue in sorted({b.account.exchange_id for b in bots if fills.get(b.pk)}):
        traded = {f.symbol for b in bots if b.account.exchange_id == venue for f in fills.get(b.pk, [])}
        closes[venue] = _closes(venue, traded, timeframe, count, notes)
    fleet = [ZERO] * len(grid)
    series = []
    for bot in bots:
        rows = fills.get(bot.pk, [])
        points = pnl_points(rows, grid, tf_ms, closes.get(bot.account.exchange_id, {})) if rows else [ZERO] * len(grid)
        fleet = [a + b for a, b in zip(fleet, points, strict=True)]
        series.append({"id": bot.pk, "name": bot.name, "points": [_num(v) for v in points]})
    units = {quote_of(b) for b in bots}
    return {
        "range": range_key,
        "ranges": list(RANGES),
        "timeframe": timeframe,
        "timeframe_s": tf_ms // 1000,
        "unit": units.pop() if len(units) == 1 else "",
        "times": [_seconds(at) for at in grid],
        "fleet": [_num(v) for v in fleet],
        "bots": series,
        "pnl_method": METHOD,
        "notes": notes,
        "at": now_ms,
    }
