"""Fan-out of market streams and user data events to websocket connections.

Each connection has a bounded queue drained by its own writer task, so a slow reader never
blocks the engine; one that falls too far behind is disconnected, as Binance does.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import WSCloseCode, web

from apps.sandbox import render
from apps.sandbox.decimals import ZERO, fmt
from apps.sandbox.feed import INTERVAL_MINUTES, MINUTE_MS, Feed, PublicTrade
from apps.sandbox.state import Account, Fill, Order

MAX_QUEUE = 10_000
STREAM = re.compile(
    r"^(?P<symbol>[a-z0-9]+)@(?P<kind>trade|aggTrade|bookTicker|ticker|miniTicker|"
    r"depth(?:5|10|20)?(?:@100ms|@1000ms)?|kline_(?P<interval>[0-9]+[mhd]))$"
)


def parse_stream(name: str, symbols: Iterable[str]) -> re.Match[str] | None:
    match = STREAM.match(name)
    if match is None or match["symbol"].upper() not in set(symbols):
        return None
    if match["interval"] is not None and match["interval"] not in INTERVAL_MINUTES:
        return None
    return match


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        combined: bool,
        peer: str | None,
        market: bool = True,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.combined = combined
        self.peer = peer
        self.market = market  # market streams (/ws, /stream), else the WebSocket API (user data)
        self.transport = transport
        self.streams: set[str] = set()
        self.user_subscriptions: dict[int, str] = {}  # subscriptionId -> api key
        self.next_subscription_id = 0
        self.session_key: str | None = None
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_QUEUE)
        self.closing: asyncio.Task[bool] | None = None

    def send(self, payload: Any) -> None:
        if self.closing is not None:
            return
        try:
            self.queue.put_nowait(dumps(payload))
        except asyncio.QueueFull:
            self.closing = asyncio.get_running_loop().create_task(
                self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too slow: the send queue overflowed")
            )

    def abort(self) -> None:
        """Cut the connection without a close frame (the client sees 1006)."""
        if self.transport is not None:
            self.transport.abort()

    async def pump(self) -> None:
        while True:
            text = await self.queue.get()
            await self.ws.send_str(text)


class Hub:
    """Implements the engine's EventSink: turns engine events into Binance stream payloads."""

    def __init__(self, feed: Feed, clock: Callable[[], int]) -> None:
        self.feed = feed
        self.clock = clock
        self.connections: set[Connection] = set()
        self.streams: dict[str, set[Connection]] = {}
        self.users: dict[str, set[tuple[Connection, int]]] = {}
        self.kline_open: dict[str, int] = {}

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(self, conn: Connection, stream: str) -> None:
        conn.streams.add(stream)
        self.streams.setdefault(stream, set()).add(conn)

    def unsubscribe(self, conn: Connection, stream: str) -> None:
        conn.streams.discard(stream)
        self.streams.get(stream, set()).discard(conn)

    def add_user(self, conn: Connection, api_key: str) -> int:
        subscription_id = conn.next_subscription_id
        conn.next_subscription_id += 1
        conn.user_subscriptions[subscription_id] = api_key
        self.users.setdefault(api_key, set()).add((conn, subscription_id))
        return subscription_id

    def remove_user(self, conn: Connection, subscription_id: int) -> bool:
        api_key = conn.user_subscriptions.pop(subscription_id, None)
        if api_key is None:
            return False
        self.users.get(api_key, set()).discard((conn, subscription_id))
        return True

    def drop(self, conn: Connection) -> None:
        for stream in list(conn.streams):
            self.unsubscribe(conn, stream)
        for subscription_id in list(conn.user_subscriptions):
            self.remove_user(conn, subscription_id)
        self.connections.discard(conn)

    def terminate_user_streams(self) -> None:
        """After a reset the keys are gone: end their streams the way Binance ends one."""
        now = self.clock()
        for subscribers in self.users.values():
            for conn, subscription_id in list(subscribers):
                conn.send({"subscriptionId": subscription_id, "event": {"e": "eventStreamTerminated", "E": now}})
                conn.user_subscriptions.pop(subscription_id, None)
        self.users.clear()
        self.kline_open.clear()

    def publish(self, stream: str, payload: Any) -> None:
        for conn in self.streams.get(stream, ()):
            conn.send({"stream": stream, "data": payload} if conn.combined else payload)

    def wanted(self, stream: str) -> bool:
        return bool(self.streams.get(stream))

    def publish_user(self, api_key: str, event: dict[str, Any]) -> None:
        for conn, subscription_id in self.users.get(api_key, ()):
            conn.send({"subscriptionId": subscription_id, "event": event})

    # -- user data (EventSink) ------------------------------------------------------------

    def order_changed(self, order: Order, execution: str, fill: Fill | None, cancel_client_id: str | None) -> None:
        now = self.clock()
        event = {
            "e": "executionReport",
            "E": now,
            "s": order.symbol,
            # On a cancel, "c" is the cancel request's id and "C" the order's own, as on Binance.
            "c": cancel_client_id or order.client_order_id,
            "S": order.side.value,
            "o": order.type,
            "f": order.time_in_force,
            "q": fmt(order.orig_qty),
            "p": fmt(order.price),
            "P": fmt(ZERO),
            "F": fmt(ZERO),
            "g": -1,
            "C": order.client_order_id if cancel_client_id else "",
            "x": execution,
            "X": order.status.value,
            "r": "NONE",
            "i": order.order_id,
            "l": fmt(fill.qty if fill else ZERO),
            "z": fmt(order.executed_qty),
            "L": fmt(fill.price if fill else ZERO),
            "n": fmt(fill.commission) if fill else "0",
            "N": fill.commission_asset if fill else None,
            "T": fill.time if fill else order.update_time,
            "t": fill.trade_id if fill else -1,
            "I": order.order_id * 2 + (1 if fill else 0),
            "w": order.status.is_open,
            "m": fill.is_maker if fill else False,
            "M": False,
            "O": order.time,
            "Z": fmt(order.cumm_quote_qty),
            "Y": fmt(fill.price * fill.qty if fill else ZERO),
            "Q": fmt(order.orig_quote_qty),
            "W": order.time,
            "V": render.STP_MODE,
        }
        self.publish_user(order.api_key, event)

    def balances_changed(self, account: Account, assets: Iterable[str]) -> None:
        now = self.clock()
        rows = []
        for asset in sorted(set(assets)):
            balance = account.balance(asset)
            rows.append({"a": asset, "f": fmt(balance.free), "l": fmt(balance.locked)})
        self.publish_user(account.api_key, {"e": "outboundAccountPosition", "E": now, "u": now, "B": rows})

    # -- market data (EventSink) ----------------------------------------------------------

    def public_trade(self, symbol: str, trade: PublicTrade) -> None:
        lower = symbol.lower()
        now = self.clock()
        trade_stream, agg_stream = f"{lower}@trade", f"{lower}@aggTrade"
        if self.wanted(trade_stream):
            self.publish(
                trade_stream,
                {
                    "e": "trade",
                    "E": now,
                    "s": symbol,
                    "t": trade.trade_id,
                    "p": fmt(trade.price),
                    "q": fmt(trade.qty),
                    "T": trade.time,
                    "m": trade.buyer_is_maker,
                    "M": True,
                },
            )
        if self.wanted(agg_stream):
            self.publish(agg_stream, {"e": "aggTrade", "E": now, "s": symbol, **render.agg_trade(trade)})
        for interval in INTERVAL_MINUTES:
            stream = f"{lower}@kline_{interval}"
            if self.wanted(stream):
                self._publish_kline(symbol, interval, stream, now)

    def _publish_kline(self, symbol: str, interval: str, stream: str, now: int) -> None:
        bucket_ms = INTERVAL_MINUTES[interval] * MINUTE_MS
        candles = self.feed.market(symbol).recent(interval, now)
        current = candles[-1]
        previous_open = self.kline_open.get(stream)
        if previous_open is not None and previous_open < current.open_time and len(candles) > 1:
            self.publish(stream, self._kline_event(symbol, interval, candles[-2], bucket_ms, now, closed=True))
        self.kline_open[stream] = current.open_time
        self.publish(stream, self._kline_event(symbol, interval, current, bucket_ms, now, closed=False))

    @staticmethod
    def _kline_event(symbol: str, interval: str, candle: Any, bucket_ms: int, now: int, closed: bool) -> dict[str, Any]:
        row = render.kline(candle, bucket_ms)
        return {
            "e": "kline",
            "E": now,
            "s": symbol,
            "k": {
                "t": row[0],
                "T": row[6],
                "s": symbol,
                "i": interval,
                "f": -1,
                "L": -1,
                "o": row[1],
                "c": row[4],
                "h": row[2],
                "l": row[3],
                "v": row[5],
                "n": row[8],
                "x": closed,
                "q": row[7],
                "V": row[9],
                "Q": row[10],
                "B": "0",
            },
        }

    def market_moved(self, symbol: str) -> None:
        market = self.feed.market(symbol)
        lower = symbol.lower()
        now = self.clock()
        bids, asks = market.levels()
        if self.wanted(f"{lower}@bookTicker"):
            ticker = render.book_ticker(market)
            self.publish(
                f"{lower}@bookTicker",
                {
                    "u": market.update_id,
                    "s": symbol,
                    "b": ticker["bidPrice"],
                    "B": ticker["bidQty"],
                    "a": ticker["askPrice"],
                    "A": ticker["askQty"],
                },
            )
        diff_streams = [
            s for s in (f"{lower}@depth", f"{lower}@depth@100ms", f"{lower}@depth@1000ms") if self.wanted(s)
        ]
        if diff_streams:
            old_bids, old_asks = market.previous_book
            event = {
                "e": "depthUpdate",
                "E": now,
                "s": symbol,
                "U": market.update_id,
                "u": market.update_id,
                "b": render.levels(_diff(dict(old_bids), dict(bids))),
                "a": render.levels(_diff(dict(old_asks), dict(asks))),
            }
            for stream in diff_streams:
                self.publish(stream, event)
        market.previous_book = (bids, asks)
        for depth in (5, 10, 20):
            for suffix in ("", "@100ms", "@1000ms"):
                stream = f"{lower}@depth{depth}{suffix}"
                if self.wanted(stream):
                    self.publish(
                        stream,
                        {
                            "lastUpdateId": market.update_id,
                            "bids": render.levels(bids[:depth]),
                            "asks": render.levels(asks[:depth]),
                        },
                    )
        for stream in (f"{lower}@ticker", f"{lower}@miniTicker"):
            if self.wanted(stream):
                self.publish(
                    stream, _ticker_event(render.ticker_24h(market, now), now, mini=stream.endswith("miniTicker"))
                )


def _diff(old: dict[Any, Any], new: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """Levels that changed, with quantity 0 for the ones that went away (Binance's diff depth)."""
    changed = [(price, qty) for price, qty in new.items() if old.get(price) != qty]
    removed = [(price, ZERO) for price in old if price not in new]
    return sorted(changed + removed)


def _ticker_event(t: dict[str, Any], now: int, mini: bool) -> dict[str, Any]:
    if mini:
        return {
            "e": "24hrMiniTicker",
            "E": now,
            "s": t["symbol"],
            "c": t["lastPrice"],
            "o": t["openPrice"],
            "h": t["highPrice"],
            "l": t["lowPrice"],
            "v": t["volume"],
            "q": t["quoteVolume"],
        }
    return {
        "e": "24hrTicker",
        "E": now,
        "s": t["symbol"],
        "p": t["priceChange"],
        "P": t["priceChangePercent"],
        "w": t["weightedAvgPrice"],
        "x": t["prevClosePrice"],
        "c": t["lastPrice"],
        "Q": t["lastQty"],
        "b": t["bidPrice"],
        "B": t["bidQty"],
        "a": t["askPrice"],
        "A": t["askQty"],
        "o": t["openPrice"],
        "h": t["highPrice"],
        "l": t["lowPrice"],
        "v": t["volume"],
        "q": t["quoteVolume"],
        "O": t["openTime"],
        "C": t["closeTime"],
        "F": t["firstId"],
        "L": t["lastId"],
        "n": t["count"],
    }
