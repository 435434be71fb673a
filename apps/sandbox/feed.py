"""Synthetic market data: a seeded random walk per symbol, its order book, trades and candles.

Each symbol draws from its own generator seeded with (seed, symbol), so its sequence of prices
does not depend on how the moves of different symbols interleave in time. The walk is pulled
gently back towards the start price so that a long run does not wander off.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal

from apps.sandbox.decimals import ZERO, floor_to
from apps.sandbox.ids import ID_BASE
from apps.sandbox.symbols import SYMBOLS, SymbolSpec

BOOK_LEVELS = 50
HISTORY_MINUTES = 3 * 24 * 60
MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
MEAN_REVERSION = 0.002
# Gap between synthetic book levels, as a fraction of the price.
LEVEL_GAP = 0.0001
INTERVAL_MINUTES = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
}


@dataclass
class Candle:
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = ZERO
    quote_volume: Decimal = ZERO
    trades: int = 0
    taker_buy_base: Decimal = ZERO
    taker_buy_quote: Decimal = ZERO

    def add(self, price: Decimal, qty: Decimal, taker_buys: bool) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.close = price
        self.volume += qty
        self.quote_volume += price * qty
        self.trades += 1
        if taker_buys:
            self.taker_buy_base += qty
            self.taker_buy_quote += price * qty

    def merged(self, other: Candle) -> Candle:
        return Candle(
            self.open_time,
            self.open,
            max(self.high, other.high),
            min(self.low, other.low),
            other.close,
            self.volume + other.volume,
            self.quote_volume + other.quote_volume,
            self.trades + other.trades,
            self.taker_buy_base + other.taker_buy_base,
            self.taker_buy_quote + other.taker_buy_quote,
        )


@dataclass(frozen=True)
class PublicTrade:
    trade_id: int
    price: Decimal
    qty: Decimal
    time: int
    buyer_is_maker: bool


Level = tuple[Decimal, Decimal]


def aggregate(minutes: list[Candle], bucket_ms: int) -> list[Candle]:
    """1m candles (ascending) merged into candles of `bucket_ms`, aligned on the epoch like Binance's."""
    buckets: list[Candle] = []
    for candle in minutes:
        open_time = candle.open_time - candle.open_time % bucket_ms
        if buckets and buckets[-1].open_time == open_time:
            buckets[-1] = buckets[-1].merged(candle)
        else:
            buckets.append(replace(candle, open_time=open_time))
    return buckets


class Market:
    def __init__(self, spec: SymbolSpec, seed: int, now_ms: int) -> None:
        self.spec = spec
        self.rng = random.Random(f"{seed}:{spec.symbol}")  # noqa: S311 - market noise, not crypto
        self.price = spec.start_price
        self.held = False
        self.update_id = 1
        self.next_trade_id = ID_BASE + 1
        self.last_trade: PublicTrade | None = None
        self.trades: deque[PublicTrade] = deque(maxlen=1000)
        self.candles: deque[Candle] = deque(maxlen=HISTORY_MINUTES + 2 * 24 * 60)
        self._history(random.Random(f"{seed}:{spec.symbol}:history"), now_ms)  # noqa: S311
        self.previous_book = self.levels()

    # -- prices and book ------------------------------------------------------------------

    def to_tick(self, value: float | Decimal) -> Decimal:
        tick = self.spec.tick_size
        return (Decimal(str(value)) / tick).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) * tick

    def quantize(self, price: float | Decimal) -> Decimal:
        """A price on the tick grid, kept well above zero whatever the walk does."""
        return max(self.to_tick(price), self.spec.tick_size * 10)

    @property
    def level_gap(self) -> Decimal:
        return max(self.spec.tick_size, self.to_tick(float(self.price) * LEVEL_GAP))

    @property
    def half_spread(self) -> Decimal:
        return max(self.spec.tick_size, floor_to(self.level_gap / 2, self.spec.tick_size))

    def best(self) -> tuple[Decimal, Decimal]:
        return self.price - self.half_spread, self.price + self.half_spread

    def levels(self, depth: int = BOOK_LEVELS) -> tuple[list[Level], list[Level]]:
        """Synthetic bids (best first) and asks (best first); level i holds (i + 1) * level_qty."""
        bid, ask = self.best()
        gap = self.level_gap
        bids: list[Level] = []
        asks: list[Level] = []
        for i in range(min(depth, BOOK_LEVELS)):
            qty = self.spec.level_qty * (i + 1)
            if bid - gap * i > 0:
                bids.append((bid - gap * i, qty))
            asks.append((ask + gap * i, qty))
        return bids, asks

    def move(self) -> Decimal:
        """One step of the walk; returns the new mid price."""
        drift = MEAN_REVERSION * math.log(float(self.spec.start_price) / float(self.price))
        step = self.rng.gauss(0.0, self.spec.volatility) + drift
        self.set_price(self.quantize(float(self.price) * math.exp(step)))
        return self.price

    def set_price(self, price: Decimal) -> None:
        self.price = self.quantize(price)
        self.update_id += 1

    def noise_trades(self, now_ms: int) -> list[PublicTrade]:
        """The anonymous trades that "caused" a move: takers hitting the best bid or lifting the best ask."""
        bid, ask = self.best()
        made: list[PublicTrade] = []
        for _ in range(self.rng.randint(1, 3)):
            buyer_is_maker = self.rng.random() < 0.5
            qty = floor_to(self.spec.level_qty * Decimal(str(self.rng.uniform(0.05, 1.0))), self.spec.step_size)
            made.append(
                self.record_trade(bid if buyer_is_maker else ask, max(qty, self.spec.step_size), buyer_is_maker, now_ms)
            )
        return made

    # -- trades and candles ---------------------------------------------------------------

    def take_trade_id(self) -> int:
        trade_id = self.next_trade_id
        self.next_trade_id += 1
        return trade_id

    def record_trade(self, price: Decimal, qty: Decimal, buyer_is_maker: bool, now_ms: int) -> PublicTrade:
        trade = PublicTrade(self.take_trade_id(), price, qty, now_ms, buyer_is_maker)
        self.trades.append(trade)
        self.last_trade = trade
        self.candle_at(now_ms).add(price, qty, taker_buys=not buyer_is_maker)
        return trade

    def candle_at(self, now_ms: int) -> Candle:
        """The 1m candle of `now_ms`, opening empty candles for quiet minutes so the series has no holes."""
        minute = now_ms - now_ms % MINUTE_MS
        last = self.candles[-1]
        while last.open_time < minute:
            last = Candle(last.open_time + MINUTE_MS, last.close, last.close, last.close, last.close)
            self.candles.append(last)
        return last

    @property
    def last_price(self) -> Decimal:
        return self.last_trade.price if self.last_trade else self.candles[-1].close

    def klines(self, interval: str, start: int | None, end: int | None, limit: int, now_ms: int) -> list[Candle]:
        self.candle_at(now_ms)
        bucket_ms = INTERVAL_MINUTES[interval] * MINUTE_MS
        lo = None if start is None else start - start % bucket_ms
        minutes = [c for c in self.candles if (lo is None or c.open_time >= lo) and (end is None or c.open_time <= end)]
        buckets = aggregate(minutes, bucket_ms)
        return buckets[:limit] if start is not None else buckets[-limit:]

    def recent(self, interval: str, now_ms: int) -> list[Candle]:
        """The previous and the current candle of `interval`, cheaply (for the kline streams)."""
        self.candle_at(now_ms)
        bucket_ms = INTERVAL_MINUTES[interval] * MINUTE_MS
        lo = now_ms - now_ms % bucket_ms - bucket_ms
        minutes: list[Candle] = []
        for candle in reversed(self.candles):
            if candle.open_time < lo:
                break
            minutes.append(candle)
        return aggregate(minutes[::-1], bucket_ms)

    def window(self, now_ms: int) -> list[Candle]:
        self.candle_at(now_ms)
        since = now_ms - DAY_MS
        return [c for c in self.candles if c.open_time >= since - since % MINUTE_MS]

    def _history(self, rng: random.Random, now_ms: int) -> None:
        """Three days of 1m candles that end at the start price, walked backwards from it."""
        minute = now_ms - now_ms % MINUTE_MS
        price = float(self.spec.start_price)
        per_minute = 4
        closes: list[list[float]] = []
        for _ in range(HISTORY_MINUTES):
            path = [price]
            for _ in range(per_minute):
                price = price * math.exp(rng.gauss(0.0, self.spec.volatility))
                path.append(price)
            closes.append(path[::-1])  # walked backwards: the minute runs from its end to its start
        closes.reverse()
        level_qty = float(self.spec.level_qty)
        for index, path in enumerate(closes):
            prices = [self.quantize(p) for p in path]
            candle = Candle(
                minute - (HISTORY_MINUTES - index) * MINUTE_MS, prices[0], max(prices), min(prices), prices[-1]
            )
            # Volumes in floats, converted once per candle: history is built at every start and reset.
            candle.trades = rng.randint(5, 40)
            volume = sum(level_qty * rng.uniform(0.05, 1.0) for _ in range(candle.trades))
            candle.volume = floor_to(Decimal(str(volume)), self.spec.step_size)
            candle.taker_buy_base = floor_to(candle.volume * Decimal(str(rng.uniform(0.3, 0.7))), self.spec.step_size)
            candle.quote_volume = candle.volume * candle.close
            candle.taker_buy_quote = candle.taker_buy_base * candle.close
            self.candles.append(candle)
        # Trade ids continue from the history, so 24h first/last ids and counts agree.
        self.next_trade_id = ID_BASE + sum(c.trades for c in self.candles) + 1
        self.candles.append(Candle(minute, self.price, self.price, self.price, self.price))


class Feed:
    def __init__(self, seed: int, now_ms: int) -> None:
        self.seed = seed
        self.reset(now_ms)

    def reset(self, now_ms: int) -> None:
        self.markets: dict[str, Market] = {name: Market(spec, self.seed, now_ms) for name, spec in SYMBOLS.items()}

    def market(self, symbol: str) -> Market:
        return self.markets[symbol]

    def next_delay(self, symbol: str, min_s: float, max_s: float) -> float:
        return self.markets[symbol].rng.uniform(min_s, max_s)
