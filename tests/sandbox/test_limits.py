"""Request rate limit and the dead-man's switch (countdownCancelAll)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import ccxt
import pytest

from tests.fixtures.sandbox import SandboxProcess
from tests.sandbox.conftest import make_binance, wait_for


def resting_buy(exchange: ccxt.binance, symbol: str) -> dict[str, Any]:
    price = float(exchange.price_to_precision(symbol, exchange.fetch_ticker(symbol)["bid"] * 0.8))
    order: dict[str, Any] = exchange.create_order(symbol, "limit", "buy", 0.01 if symbol == "BTC/USDT" else 0.1, price)
    return order


def countdown(exchange: ccxt.binance, countdown_ms: int, symbol: str | None = None) -> dict[str, Any]:
    """The raw call a ccxt user makes: binance has no unified method for the spot countdown."""
    params: dict[str, Any] = {"countdownTime": countdown_ms}
    if symbol is not None:
        params["symbol"] = symbol
    answer: dict[str, Any] = exchange.request("countdownCancelAll", ["private"], "POST", params)
    return answer


def test_it_answers_429_with_retry_after_past_the_rate_limit(sandbox: SandboxProcess, sandbox_key) -> None:
    api_key, secret = sandbox_key
    sandbox.admin.set_rate_limit(3, api_key=api_key)
    exchange = make_binance(sandbox, api_key, secret)
    for _ in range(3):
        exchange.fetch_balance()
    # ccxt 4.5.90's binance raises DDoSProtection for any HTTP 429 (not RateLimitExceeded).
    with pytest.raises(ccxt.DDoSProtection) as caught:
        exchange.fetch_balance()
    assert '"code":-1003' in str(caught.value)
    assert int(exchange.last_response_headers["Retry-After"]) >= 1

    request = urllib.request.Request(f"{sandbox.url}/api/v3/ping", headers={"X-MBX-APIKEY": api_key})
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(request, timeout=5)
    assert raw.value.code == 429
    assert int(raw.value.headers["Retry-After"]) >= 1
    assert json.loads(raw.value.read())["code"] == -1003

    other = sandbox.new_key()  # the limit was this key's only
    assert make_binance(sandbox, other.api_key, other.secret).fetch_balance()["BTC"]["total"] == 1


def test_the_countdown_cancels_open_orders_when_not_refreshed(exchange: ccxt.binance, sandbox: SandboxProcess) -> None:
    btc = resting_buy(exchange, "BTC/USDT")
    eth = resting_buy(exchange, "ETH/USDT")

    assert countdown(exchange, 1500, "BTCUSDT") == {"symbol": "BTCUSDT", "countdownTime": "1500"}
    (state,) = sandbox.admin.countdown(exchange.apiKey)
    assert (state.symbol, state.countdown_ms, state.active, state.triggered) == ("BTCUSDT", 1500, True, 0)

    wait_for(lambda: not sandbox.admin.open_orders(exchange.apiKey, "BTC/USDT"), "the countdown to cancel BTC/USDT")
    assert exchange.fetch_order(btc["id"], "BTC/USDT")["status"] == "canceled"
    assert exchange.fetch_order(eth["id"], "ETH/USDT")["status"] == "open"  # another symbol: untouched
    (state,) = sandbox.admin.countdown(exchange.apiKey)
    assert (state.active, state.triggered) == (False, 1)
    assert exchange.fetch_balance()["USDT"]["used"] == pytest.approx(eth["amount"] * eth["price"])


def test_a_countdown_without_symbol_covers_every_symbol(exchange: ccxt.binance, sandbox: SandboxProcess) -> None:
    resting_buy(exchange, "BTC/USDT")
    resting_buy(exchange, "ETH/USDT")
    assert countdown(exchange, 1000) == {"symbol": None, "countdownTime": "1000"}
    wait_for(lambda: not sandbox.admin.open_orders(exchange.apiKey), "the countdown to cancel every order")
    assert {o["status"] for o in sandbox.admin.orders(exchange.apiKey)} == {"CANCELED"}


def test_refreshing_or_disabling_the_countdown_keeps_orders_open(
    exchange: ccxt.binance, sandbox: SandboxProcess
) -> None:
    order = resting_buy(exchange, "BTC/USDT")
    countdown_ms = 2500
    deadline = time.monotonic() + 2 * countdown_ms / 1000  # well past the first countdown
    while time.monotonic() < deadline:
        countdown(exchange, countdown_ms, "BTCUSDT")
        time.sleep(0.25)
    assert countdown(exchange, 0, "BTCUSDT") == {"symbol": "BTCUSDT", "countdownTime": "0"}
    (state,) = sandbox.admin.countdown(exchange.apiKey)
    assert (state.active, state.triggered) == (False, 0)
    assert exchange.fetch_order(order["id"], "BTC/USDT")["status"] == "open"
