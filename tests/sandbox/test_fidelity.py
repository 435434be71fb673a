"""The sandbox driven as a ccxt user drives Binance: default client options, and streams exactly as subscribed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import ccxt
import ccxt.pro
import pytest

from apps.sandbox.ccxt_config import point_at_sandbox, rewrite_urls
from tests.fixtures.sandbox import SandboxProcess

# Each stream, and how to recognise its payloads: what Binance sends on it and nothing else.
STREAM_KINDS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "ethusdt@trade": lambda m: m.get("e") == "trade",
    "ethusdt@aggTrade": lambda m: m.get("e") == "aggTrade",
    "ethusdt@bookTicker": lambda m: "e" not in m and {"u", "b", "a"} <= set(m),
    "ethusdt@ticker": lambda m: m.get("e") == "24hrTicker" and {"b", "a"} <= set(m),
    "ethusdt@miniTicker": lambda m: m.get("e") == "24hrMiniTicker" and "b" not in m,
    "ethusdt@depth5": lambda m: "e" not in m and len(m.get("bids", [])) == 5,
    "ethusdt@depth": lambda m: m.get("e") == "depthUpdate",
    "ethusdt@kline_1m": lambda m: m.get("e") == "kline" and m["k"]["i"] == "1m",
    "ethusdt@kline_5m": lambda m: m.get("e") == "kline" and m["k"]["i"] == "5m",
}
MESSAGES_EACH = 3


def test_a_ccxt_client_with_only_its_urls_rewritten_loads_markets_and_trades(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    """As a tool that lets its users change URLs only (Freqtrade) runs ccxt: every default option on."""
    exchange = ccxt.binance({"apiKey": sandbox_key[0], "secret": sandbox_key[1]})
    rewrite_urls(exchange, sandbox.url)
    assert exchange.options["fetchMarkets"]["types"] == ["spot", "linear", "inverse"]
    assert exchange.options["fetchCurrencies"] is True and exchange.options["fetchMargins"] is True

    markets = exchange.load_markets()
    assert {m["type"] for m in markets.values()} == {"spot"}  # no futures: none listed, no error
    assert {"BTC/USDT", "ETH/USDT", "SOL/USDT", "ETH/BTC"} <= set(markets)
    assert exchange.options["crossMarginPairsData"] == [] and exchange.options["isolatedMarginPairsData"] == []
    usdt = exchange.currencies["USDT"]
    assert (usdt["name"], usdt["active"], sorted(usdt["networks"])) == ("TetherUS", True, ["ERC20", "TRC20"])
    assert usdt["networks"]["ERC20"]["withdraw"] is False and usdt["info"]["free"] == "10000.00000000"
    assert {"BTC", "ETH", "SOL", "USDT"} <= set(exchange.currencies)

    assert exchange.fetch_balance()["USDT"]["free"] == 10000
    price = float(exchange.price_to_precision("BTC/USDT", exchange.fetch_ticker("BTC/USDT")["bid"] * 0.8))
    order = exchange.create_order("BTC/USDT", "limit", "buy", 0.01, price)
    assert order["status"] == "open"
    assert sandbox.admin.open_orders(sandbox_key[0])[0]["orderId"] == int(order["id"])
    assert exchange.cancel_order(order["id"], "BTC/USDT")["status"] == "canceled"
    assert exchange.fetch_balance()["USDT"]["used"] == 0


def test_the_listing_endpoints_are_signed_like_binances(sandbox: SandboxProcess) -> None:
    unsigned = ccxt.binance()
    rewrite_urls(unsigned, sandbox.url)
    assert unsigned.fapiPublicGetExchangeInfo()["symbols"] == []
    wrong = ccxt.binance({"apiKey": sandbox.new_key().api_key, "secret": "not-the-secret"})
    rewrite_urls(wrong, sandbox.url)
    for call in (wrong.sapiGetCapitalConfigGetall, wrong.sapiGetMarginAllPairs, wrong.sapiGetMarginIsolatedAllPairs):
        with pytest.raises(ccxt.AuthenticationError, match="-1022"):
            call()


def test_each_market_stream_carries_only_its_own_events(sandbox: SandboxProcess) -> None:
    """One connection per stream, all at once: nothing arrives that the connection did not subscribe to."""

    async def collect(session: aiohttp.ClientSession, stream: str) -> list[dict[str, Any]]:
        url = sandbox.url.replace("http://", "ws://") + "/ws/1"
        async with session.ws_connect(url) as ws:
            await ws.send_json({"method": "SUBSCRIBE", "params": [stream], "id": 1})
            assert json.loads((await asyncio.wait_for(ws.receive(), 10)).data) == {"result": None, "id": 1}
            return [json.loads((await asyncio.wait_for(ws.receive(), 10)).data) for _ in range(MESSAGES_EACH)]

    async def scenario() -> dict[str, list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:
            received = await asyncio.gather(*(collect(session, stream) for stream in STREAM_KINDS))
        return dict(zip(STREAM_KINDS, received, strict=True))

    for stream, messages in asyncio.run(scenario()).items():
        strays = [m for m in messages if not STREAM_KINDS[stream](m)]
        assert not strays, f"{stream} carried {strays[0]}"


def test_ccxt_pro_watch_ticker_gets_the_book_top_from_the_full_ticker(sandbox: SandboxProcess) -> None:
    """ccxt 4.5.90's watch_ticker subscribes to <symbol>@miniTicker unless told `name: ticker` (it reads
    watchTickers' option): on Binance as here, only the full ticker has bid and ask."""

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        exchange = ccxt.pro.binance()
        point_at_sandbox(exchange, sandbox.url)
        try:
            await exchange.load_markets()
            full = await asyncio.wait_for(exchange.watch_ticker("SOL/USDT", {"name": "ticker"}), 10)
            mini = await asyncio.wait_for(exchange.watch_ticker("ETH/BTC"), 10)
            return full, mini
        finally:
            await exchange.close()

    full, mini = asyncio.run(scenario())
    assert 0 < full["bid"] < full["ask"] and full["last"] > 0 and full["bidVolume"] > 0
    assert mini["last"] > 0 and mini["bid"] is None  # the mini ticker: no book top
