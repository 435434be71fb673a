"""Every ccxt unified method the project uses, run by unmodified ccxt against the sandbox."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import ccxt
import ccxt.pro
import pytest

from apps.sandbox.ccxt_config import point_at_sandbox
from tests.fixtures.sandbox import SandboxProcess

SYMBOL = "BTC/USDT"
ORDER_FIELDS = ("id", "clientOrderId", "timestamp", "datetime", "symbol", "type", "side", "price", "amount")
ORDER_FIGURES = ("filled", "remaining", "status")
TRADE_FIELDS = ("id", "order", "timestamp", "datetime", "symbol", "side", "takerOrMaker", "price", "amount", "cost")


def client_id() -> str:
    return f"t{uuid.uuid4().hex[:24]}"


def assert_order(order: dict[str, Any], *, type: str, side: str, status: str) -> None:
    missing = [f for f in ORDER_FIELDS + ORDER_FIGURES if order.get(f) is None]
    assert not missing, f"order lacks {missing}: {order}"
    assert order["symbol"] == SYMBOL
    assert (order["type"], order["side"], order["status"]) == (type, side, status)
    assert order["datetime"] == ccxt.Exchange.iso8601(order["timestamp"])
    assert order["remaining"] == pytest.approx(order["amount"] - order["filled"])


def assert_trade(trade: dict[str, Any], *, order_id: str, side: str, taker_or_maker: str) -> None:
    missing = [f for f in TRADE_FIELDS if trade.get(f) is None]
    assert not missing, f"trade lacks {missing}: {trade}"
    assert (trade["symbol"], trade["order"], trade["side"], trade["takerOrMaker"]) == (
        SYMBOL,
        order_id,
        side,
        taker_or_maker,
    )
    assert trade["cost"] == pytest.approx(trade["price"] * trade["amount"])
    assert trade["fee"]["currency"] == "BTC"
    assert trade["fee"]["cost"] == pytest.approx(trade["amount"] * 0.001)


def test_ccxt_rest_methods_return_complete_unified_results(exchange: ccxt.binance) -> None:
    markets = exchange.load_markets(reload=True)
    assert {"BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC"} <= set(markets)
    market = markets[SYMBOL]
    assert (market["spot"], market["active"], market["base"], market["quote"]) == (True, True, "BTC", "USDT")
    assert market["precision"] == {"amount": 1e-05, "price": 0.01, "base": 1e-08, "quote": 1e-08}
    assert market["limits"]["cost"]["min"] == 5

    balance = exchange.fetch_balance()
    assert balance["USDT"] == {"free": 10000, "used": 0, "total": 10000}
    assert balance["BTC"] == {"free": 1, "used": 0, "total": 1}

    ticker = exchange.fetch_ticker(SYMBOL)
    assert ticker["symbol"] == SYMBOL and ticker["timestamp"] and ticker["datetime"]
    assert 0 < ticker["bid"] < ticker["ask"]
    assert ticker["low"] <= ticker["last"] <= ticker["high"]
    assert ticker["baseVolume"] > 0 and ticker["quoteVolume"] > 0

    candles = exchange.fetch_ohlcv(SYMBOL, "1h", limit=5)
    assert len(candles) == 5
    assert [c[0] - candles[0][0] for c in candles] == [0, 3_600_000, 7_200_000, 10_800_000, 14_400_000]
    for _ts, open_, high, low, close, volume in candles:
        assert low <= min(open_, close) <= max(open_, close) <= high and volume > 0

    # A limit buy far below the market rests; its funds are locked.
    resting_cid = client_id()
    price = float(exchange.price_to_precision(SYMBOL, ticker["bid"] * 0.8))
    limit = exchange.create_order(SYMBOL, "limit", "buy", 0.01, price, {"clientOrderId": resting_cid})
    assert_order(limit, type="limit", side="buy", status="open")
    assert (limit["clientOrderId"], limit["price"], limit["amount"], limit["filled"]) == (resting_cid, price, 0.01, 0)

    fetched = exchange.fetch_order(limit["id"], SYMBOL)
    assert_order(fetched, type="limit", side="buy", status="open")
    assert (fetched["id"], fetched["clientOrderId"], fetched["price"]) == (limit["id"], resting_cid, price)
    assert exchange.fetch_order(None, SYMBOL, {"clientOrderId": resting_cid})["id"] == limit["id"]
    assert [o["id"] for o in exchange.fetch_open_orders(SYMBOL)] == [limit["id"]]

    canceled = exchange.cancel_order(limit["id"], SYMBOL)
    assert canceled["id"] == limit["id"] and canceled["status"] == "canceled"
    assert exchange.fetch_order(limit["id"], SYMBOL)["status"] == "canceled"
    assert exchange.fetch_open_orders(SYMBOL) == []

    # A market buy fills at once against the synthetic book; the fee is taken in BTC.
    market_order = exchange.create_order(SYMBOL, "market", "buy", 0.001)
    assert_order(market_order, type="market", side="buy", status="closed")
    assert (market_order["filled"], market_order["remaining"]) == (0.001, 0)
    assert market_order["average"] > 0
    assert market_order["cost"] == pytest.approx(market_order["average"] * 0.001)
    assert market_order["fee"] == {"currency": "BTC", "cost": pytest.approx(0.000001)}
    assert market_order["trades"] and all(t["price"] > 0 and t["amount"] > 0 for t in market_order["trades"])

    my_trades = exchange.fetch_my_trades(SYMBOL)
    assert len(my_trades) == len(market_order["trades"])
    for trade in my_trades:
        assert_trade(trade, order_id=market_order["id"], side="buy", taker_or_maker="taker")

    first = exchange.create_order(SYMBOL, "limit", "buy", 0.001, price)
    second = exchange.create_order(
        SYMBOL, "limit", "sell", 0.001, float(exchange.price_to_precision(SYMBOL, price * 2))
    )
    all_canceled = exchange.cancel_all_orders(SYMBOL)
    assert sorted(o["id"] for o in all_canceled) == sorted([first["id"], second["id"]])
    assert {o["status"] for o in all_canceled} == {"canceled"}
    assert exchange.fetch_open_orders(SYMBOL) == []

    after = exchange.fetch_balance()
    assert after["BTC"]["total"] == pytest.approx(1 + 0.001 - 0.000001)
    assert after["USDT"]["total"] == pytest.approx(10000 - market_order["cost"])
    assert after["USDT"]["used"] == 0 and after["BTC"]["used"] == 0


async def _watch_until(watch: Any, accept: Any, timeout: float = 10.0) -> Any:
    """Call `watch()` until `accept(result)` holds."""

    async def loop() -> Any:
        while True:
            result = await watch()
            if accept(result):
                return result

    return await asyncio.wait_for(loop(), timeout)


def test_ccxt_pro_streams_public_trades_orders_my_trades_and_balances(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    api_key, secret = sandbox_key

    async def scenario() -> None:
        exchange = ccxt.pro.binance({"apiKey": api_key, "secret": secret})
        point_at_sandbox(exchange, sandbox.url)
        try:
            await exchange.load_markets()
            trades = await asyncio.wait_for(exchange.watch_trades(SYMBOL), 10)
            trade = trades[-1]
            assert trade["symbol"] == SYMBOL and trade["id"] and trade["timestamp"] and trade["datetime"]
            assert trade["price"] > 0 and trade["amount"] > 0 and trade["side"] in ("buy", "sell")

            # Subscribe to the user data stream first, so no event can come before it.
            await exchange.ensure_user_data_stream_ws_subscribe_signature("spot")
            ticker = await exchange.fetch_ticker(SYMBOL)
            price = float(exchange.price_to_precision(SYMBOL, ticker["bid"] * 0.8))
            cid = client_id()
            orders = asyncio.ensure_future(exchange.watch_orders(SYMBOL))
            await asyncio.sleep(0)  # let the watcher register before the order exists
            placed = await exchange.create_order(SYMBOL, "limit", "buy", 0.002, price, {"clientOrderId": cid})
            seen = [o for o in await asyncio.wait_for(orders, 10) if o["id"] == placed["id"]]
            assert seen, "watch_orders did not report the new order"
            assert_order(seen[-1], type="limit", side="buy", status="open")
            assert (seen[-1]["clientOrderId"], seen[-1]["price"], seen[-1]["amount"]) == (cid, price, 0.002)

            canceled_watch = asyncio.ensure_future(
                _watch_until(
                    lambda: exchange.watch_orders(SYMBOL),
                    lambda os: any(o["id"] == placed["id"] and o["status"] == "canceled" for o in os),
                )
            )
            await asyncio.sleep(0)
            await exchange.cancel_order(placed["id"], SYMBOL)
            canceled = [o for o in await canceled_watch if o["id"] == placed["id"]][-1]
            assert canceled["clientOrderId"] == cid and canceled["filled"] == 0

            my_trades = asyncio.ensure_future(exchange.watch_my_trades(SYMBOL))
            balance = asyncio.ensure_future(
                _watch_until(exchange.watch_balance, lambda b: b.get("BTC", {}).get("total", 0) > 1)
            )
            await asyncio.sleep(0)
            bought = await exchange.create_order(SYMBOL, "market", "buy", 0.001)
            streamed = [t for t in await asyncio.wait_for(my_trades, 10) if t["order"] == bought["id"]]
            assert streamed, "watch_my_trades did not report the fill"
            assert_trade(streamed[0], order_id=bought["id"], side="buy", taker_or_maker="taker")
            balances = await balance
            assert balances["BTC"]["free"] == pytest.approx(1 + 0.001 - 0.000001)
        finally:
            await exchange.close()

    asyncio.run(scenario())


def test_ccxt_pro_streams_order_book_candles_and_best_prices(sandbox: SandboxProcess) -> None:
    async def scenario() -> None:
        exchange = ccxt.pro.binance()
        point_at_sandbox(exchange, sandbox.url)
        try:
            await exchange.load_markets()
            book = await asyncio.wait_for(exchange.watch_order_book("ETH/USDT"), 10)
            bids, asks = book["bids"], book["asks"]
            assert bids and asks and bids[0][0] < asks[0][0]
            assert [b[0] for b in bids] == sorted((b[0] for b in bids), reverse=True)
            assert [a[0] for a in asks] == sorted(a[0] for a in asks)
            book = await asyncio.wait_for(exchange.watch_order_book("ETH/USDT"), 10)
            assert book["bids"][0][0] < book["asks"][0][0]

            candles = await asyncio.wait_for(exchange.watch_ohlcv("ETH/USDT", "1m"), 10)
            ts, open_, high, low, close, _volume = candles[-1]
            assert ts % 60_000 == 0 and low <= min(open_, close) <= max(open_, close) <= high

            best = await asyncio.wait_for(exchange.watch_bids_asks(["SOL/USDT"]), 10)
            assert 0 < best["SOL/USDT"]["bid"] < best["SOL/USDT"]["ask"]
        finally:
            await exchange.close()

    asyncio.run(scenario())
