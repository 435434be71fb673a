"""Public market data over the exchange's websocket (ccxt.pro): one client per venue, no credentials.

The per-host market-data feed (apps.trading.marketdata) holds one `MarketStream` per venue and asks it for
each symbol's ticker and candles as they change; ccxt.pro keeps one subscription per stream, whoever waits
on it. Market data is public: a stream never holds a key.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import ccxt

from apps.exchanges.port.errors import acall, translate
from apps.exchanges.port.values import Candle, Ticker, dec
from apps.exchanges.port.venues import ccxt_client, venue

logger = logging.getLogger(__name__)

# Binance's watchTicker defaults to the mini ticker, which has no book top: the full ticker has bid and ask,
# as the REST ticker has, so that a price from the stream is the same figure (the middle of the book's top).
_TICKER_PARAMS: dict[str, dict[str, str]] = {"binance": {"name": "ticker"}, "binanceus": {"name": "ticker"}}


class MarketStream:
    """One venue's public market streams (and its REST candles, to fill a series before the stream takes over)."""

    def __init__(self, *, exchange_id: str) -> None:
        import ccxt.pro  # late: the websocket classes are needed by the one feed process per host, not by bot workers

        self.exchange_id = exchange_id
        self._venue = venue(exchange_id)
        self._client = ccxt_client(ccxt.pro, exchange_id, {})

    def __repr__(self) -> str:
        return f"MarketStream({self.exchange_id!r})"

    async def ticker(self, symbol: str) -> Ticker:
        """The symbol's ticker at its next change (the first call subscribes)."""
        try:
            raw: dict[str, Any] = await self._client.watch_ticker(
                symbol, dict(_TICKER_PARAMS.get(self._venue.ccxt_id, {}))
            )
        except ccxt.BaseError as exc:
            raise translate(exc) from None
        return Ticker(
            symbol, dec(raw.get("bid")) or None, dec(raw.get("ask")) or None, dec(raw.get("last") or raw.get("close"))
        )

    async def candles(self, symbol: str, *, timeframe: str) -> list[Candle]:
        """The candles of `timeframe` that changed since the last call (the first call subscribes)."""
        try:
            raw: list[list[Any]] = await self._client.watch_ohlcv(symbol, timeframe)
        except ccxt.BaseError as exc:
            raise translate(exc) from None
        return [_candle(c) for c in raw]

    async def recent_candles(self, symbol: str, *, timeframe: str, limit: int) -> list[Candle]:
        """The last `limit` candles by REST (one request): the history a stream does not replay."""
        raw: list[list[Any]] = await acall(self._client.fetch_ohlcv, symbol, timeframe, None, limit)
        return [_candle(c) for c in raw]

    async def close(self) -> None:
        try:
            await self._client.close()
        except Exception:
            logger.debug("closing a market stream failed", exc_info=True)


def _candle(row: list[Any]) -> Candle:
    return Candle(int(row[0]), *(Decimal(str(x)) for x in row[1:6]))
