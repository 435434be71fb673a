"""Market data shared by the bots of one host: one websocket feed per host, read from Valkey by every tick.

Polling the exchange from every bot costs request weight per bot, and the exchange limits public requests
per address (Binance does, and so does the sandbox): the fleet's weight would grow with each bot added. So
one feed process per host (`manage.py runmarketdata`, started by the fleet supervisor beside its workers)
subscribes once per (venue, symbol) that the host's running bots trade, over the exchange's websocket through
the port (`port.MarketStream`), and writes into Valkey, per host, venue and symbol:

- the latest ticker (bid, ask, last), and
- the closes of the last CLOSES_KEPT one-minute candles (filled once by REST, then kept up by the stream),

each with the time it was written and a short TTL. A tick reads its price and its closes with `market_price`
and `market_closes`: from the cache when the entry is fresh (younger than about two tick intervals), else by
REST through the bot's own client, as before the feed existed, logging that fallback once a minute per symbol.
The order gate values a market order at `market_price`, and the paper simulator fills at `market_touch`'s
bid and ask, so a paper fleet's fills cost the exchange no request either.
A stale entry is never used: when the feed dies or its stream goes quiet, the bots still tick, at the old
cost. Market data is public: the feed holds no key and gets no secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import redis
import redis.asyncio as aredis
from django.conf import settings
from django.db import close_old_connections

from apps.bots.models import Bot
from apps.exchanges import port

logger = logging.getLogger(__name__)

KEY_PREFIX = "botconsole:marketdata"
TIMEFRAME = "1m"
TIMEFRAME_MS = 60_000
# As many closes as a tick may ask for (apps.trading.tick.MAX_CANDLES).
CLOSES_KEPT = 1000
# An entry outlives the feed briefly only: the timestamp decides whether it is used, the TTL clears up.
ENTRY_TTL_S = 30
# Binance pushes a kline update every 2 s: a bot ticking each second must not fall back between two pushes.
MIN_MAX_AGE_S = 3.0
FALLBACK_LOG_EVERY_S = 60.0
SYMBOLS_EVERY_S = 2.0
BACKOFF_MAX_S = 30.0


def ticker_key(host: str, venue: str, symbol: str) -> str:
    return f"{KEY_PREFIX}:{host}:{venue}:{symbol}:ticker"


def closes_key(host: str, venue: str, symbol: str, timeframe: str = TIMEFRAME) -> str:
    return f"{KEY_PREFIX}:{host}:{venue}:{symbol}:closes:{timeframe}"


def max_age_s(tick_interval_s: int) -> float:
    """How old a cached entry a bot ticking every `tick_interval_s` still uses: about two of its intervals."""
    return max(2.0 * tick_interval_s, MIN_MAX_AGE_S)


# -- the tick's side: read the cache, else REST ----------------------------------------------------

_redis_client: redis.Redis | None = None
_fallback_logged: dict[tuple[str, str, str], float] = {}


def _redis() -> redis.Redis:
    # One client per process, with short timeouts: a tick falls back to REST rather than wait on Valkey.
    global _redis_client
    if _redis_client is None:
        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1.0, socket_timeout=1.0)
    return _redis_client


def _fresh(key: str, max_age: float) -> tuple[dict[str, Any] | None, str]:
    """The entry at `key` if it is younger than `max_age` seconds, else None and why not."""
    try:
        raw = _redis().get(key)
    except redis.RedisError as exc:
        return None, f"Valkey unavailable ({type(exc).__name__})"
    if not raw:
        return None, "no entry"
    try:
        entry = json.loads(raw)
        age = time.time() - float(entry["at"])
    except (ValueError, KeyError, TypeError):
        return None, "unreadable entry"
    if not -1.0 <= age <= max_age:
        return None, f"entry {age:.1f} s old"
    return entry, ""


def _fallback(kind: str, venue: str, symbol: str, why: str) -> None:
    now = time.monotonic()
    key = (kind, venue, symbol)
    if now - _fallback_logged.get(key, -FALLBACK_LOG_EVERY_S) >= FALLBACK_LOG_EVERY_S:
        _fallback_logged[key] = now
        logger.warning("market data: %s of %s %s read by REST: the shared feed's %s", kind, venue, symbol, why)


def cached_ticker(*, host: str, venue: str, symbol: str, max_age: float) -> tuple[port.Ticker | None, str]:
    """The feed's ticker if fresh (else None and why not)."""
    entry, why = _fresh(ticker_key(host, venue, symbol), max_age)
    if entry is None:
        return None, why
    try:
        ticker = port.Ticker(symbol, *(Decimal(entry[f]) if entry.get(f) else None for f in ("bid", "ask", "last")))
    except (InvalidOperation, TypeError):
        return None, "unreadable entry"
    return ticker, ""


def cached_closes(
    *, host: str, venue: str, symbol: str, limit: int, max_age: float
) -> tuple[tuple[Decimal, ...] | None, str]:
    """The feed's last `limit` closes if fresh and it has that many (else None and why not)."""
    entry, why = _fresh(closes_key(host, venue, symbol), max_age)
    if entry is None:
        return None, why
    raw = entry.get("closes")
    if not isinstance(raw, list) or len(raw) < limit:
        return None, f"entry holds {len(raw) if isinstance(raw, list) else 0} closes, {limit} wanted"
    try:
        return tuple(Decimal(c) for c in raw[-limit:]), ""
    except (InvalidOperation, TypeError):
        return None, "unreadable entry"


def market_price(*, bot: Bot, exchange: port.Exchange, symbol: str) -> Decimal:
    """The symbol's price for this bot's tick: the host's feed when fresh, else the exchange by REST."""
    ticker, why = cached_ticker(
        host=bot.host, venue=exchange.exchange_id, symbol=symbol, max_age=max_age_s(bot.tick_interval_s)
    )
    if ticker is not None:
        try:
            return ticker.price
        except port.ExchangeError:
            why = "entry has no price"
    _fallback("price", exchange.exchange_id, symbol, why)
    return exchange.price(symbol)


def market_touch(*, bot: Bot, exchange: port.Exchange, symbol: str) -> tuple[Decimal, Decimal]:
    """The best bid and ask for this bot (a paper fill's prices): the host's feed when fresh, else REST."""
    ticker, why = cached_ticker(
        host=bot.host, venue=exchange.exchange_id, symbol=symbol, max_age=max_age_s(bot.tick_interval_s)
    )
    if ticker is not None:
        try:
            return ticker.touch
        except port.ExchangeError:
            why = "entry has no bid or ask"
    _fallback("bid/ask", exchange.exchange_id, symbol, why)
    return exchange.ticker(symbol).touch


def market_closes(*, bot: Bot, exchange: port.Exchange, symbol: str, limit: int) -> tuple[Decimal, ...]:
    """The last `limit` one-minute closes (the current candle's last): the host's feed when fresh, else REST."""
    closes, why = cached_closes(
        host=bot.host, venue=exchange.exchange_id, symbol=symbol, limit=limit, max_age=max_age_s(bot.tick_interval_s)
    )
    if closes is not None:
        return closes
    _fallback("closes", exchange.exchange_id, symbol, why)
    return tuple(c.close for c in exchange.candles(symbol, timeframe=TIMEFRAME, limit=limit))


# -- the feed's side: one process per host -------------------------------------------------------------


def symbols_in_use(*, host: str) -> set[tuple[str, str]]:
    """(venue, symbol) of every bot this host's supervisor runs (desired running, not halted)."""
    close_old_connections()
    rows = Bot.objects.filter(host=host, desired_state=Bot.Desired.RUNNING, halted=False).values_list(
        "account__exchange_id", "symbols"
    )
    return {(str(venue), str(symbol)) for venue, symbols in rows for symbol in (symbols or [])}


def _backoff(failures: int) -> float:
    return float(min(BACKOFF_MAX_S, 2 ** max(0, failures - 1)))


@dataclass
class Feed:
    """Subscribes to what the host's bots trade and keeps the cache entries current; driven by `run()`."""

    host: str
    valkey: aredis.Redis
    streams: dict[str, port.MarketStream] = field(default_factory=dict)
    tasks: dict[tuple[str, str], list[asyncio.Task[None]]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event, *, poll_s: float = SYMBOLS_EVERY_S) -> None:
        try:
            while not stop.is_set():
                try:
                    wanted = await asyncio.to_thread(symbols_in_use, host=self.host)
                except Exception:  # the database away for a moment: keep streaming what we have
                    logger.exception("market data: could not read the symbols in use")
                else:
                    await self.follow(wanted)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)
        finally:
            await self.follow(set())

    async def follow(self, wanted: set[tuple[str, str]]) -> None:
        """Subscribe to the pairs newly wanted, drop the ones no longer wanted (and a venue left without any)."""
        for pair, tasks in list(self.tasks.items()):
            failed = [t for t in tasks if t.done()]
            if failed:  # a bug, not the exchange (whose errors are retried): say so and subscribe again
                for task in failed:
                    if not task.cancelled() and task.exception() is not None:
                        logger.error("market data: %s stopped", task.get_name(), exc_info=task.exception())
                for task in tasks:
                    task.cancel()
                del self.tasks[pair]
        for pair in sorted(wanted - set(self.tasks)):
            venue, symbol = pair
            try:
                stream = self.streams.get(venue) or port.MarketStream(exchange_id=venue)
            except port.ExchangeError as exc:
                logger.error("market data: cannot stream %s: %s", venue, exc.message)
                continue
            self.streams[venue] = stream
            self.tasks[pair] = [
                asyncio.create_task(self._tickers(stream, venue, symbol), name=f"ticker {venue} {symbol}"),
                asyncio.create_task(self._closes(stream, venue, symbol), name=f"closes {venue} {symbol}"),
            ]
            logger.info("market data: streaming %s %s for host %s", venue, symbol, self.host)
        for pair in sorted(set(self.tasks) - wanted):
            for task in self.tasks.pop(pair):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            logger.info("market data: no bot of host %s trades %s %s any more", self.host, *pair)
        for venue in [v for v in self.streams if not any(p[0] == v for p in self.tasks)]:
            await self.streams.pop(venue).close()

    async def _write(self, key: str, entry: dict[str, Any]) -> None:
        await self.valkey.set(key, json.dumps({**entry, "at": time.time()}), ex=ENTRY_TTL_S)

    async def _tickers(self, stream: port.MarketStream, venue: str, symbol: str) -> None:
        key, failures = ticker_key(self.host, venue, symbol), 0
        while True:
            try:
                ticker = await stream.ticker(symbol)
                await self._write(key, {f: _text(getattr(ticker, f)) for f in ("bid", "ask", "last")})
                failures = 0
            except (port.ExchangeError, redis.RedisError) as exc:
                failures += 1
                logger.warning("market data: ticker of %s %s: %s", venue, symbol, _reason(exc))
                await asyncio.sleep(_backoff(failures))

    async def _closes(self, stream: port.MarketStream, venue: str, symbol: str) -> None:
        """Fill the series by REST once, then keep it up from the kline stream; fill again after a gap."""
        key, failures = closes_key(self.host, venue, symbol), 0
        series: dict[int, Decimal] = {}
        while True:
            try:
                if not series:
                    candles = await stream.recent_candles(symbol, timeframe=TIMEFRAME, limit=CLOSES_KEPT)
                    series = {c.at_ms: c.close for c in candles}
                else:
                    for candle in await stream.candles(symbol, timeframe=TIMEFRAME):
                        if candle.at_ms > max(series) + TIMEFRAME_MS:
                            series = {}  # a minute went by unseen (a reconnect): fill again by REST
                            break
                        series[candle.at_ms] = candle.close
                    if not series:
                        continue
                for at in sorted(series)[:-CLOSES_KEPT]:
                    del series[at]
                await self._write(key, {"closes": [_text(series[at]) for at in sorted(series)]})
                failures = 0
            except (port.ExchangeError, redis.RedisError) as exc:
                failures += 1
                series = {}
                logger.warning("market data: closes of %s %s: %s", venue, symbol, _reason(exc))
                await asyncio.sleep(_backoff(failures))


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, port.ExchangeError) else type(exc).__name__


async def feed_run(*, host: str, stop: asyncio.Event) -> None:
    """The feed process's body: until `stop` is set."""
    valkey = aredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2.0, socket_timeout=5.0)
    try:
        await Feed(host=host, valkey=valkey).run(stop)
    finally:
        await valkey.aclose()
