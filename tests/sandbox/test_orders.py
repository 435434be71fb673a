"""The matching engine seen through ccxt: ids, balances, partial fills, time in force, filters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import ccxt
import pytest

from tests.fixtures.sandbox import SandboxProcess
from tests.sandbox.conftest import make_binance

SYMBOL = "BTC/USDT"


def below_market(exchange: ccxt.binance, symbol: str, factor: float = 0.8) -> float:
    return float(exchange.price_to_precision(symbol, exchange.fetch_ticker(symbol)["bid"] * factor))


def test_it_refuses_a_duplicate_client_order_id_and_keeps_the_first_order(exchange: ccxt.binance, sandbox) -> None:
    cid = f"dup{uuid.uuid4().hex[:20]}"
    price = below_market(exchange, SYMBOL)
    first = exchange.create_order(SYMBOL, "limit", "buy", 0.01, price, {"clientOrderId": cid})

    with pytest.raises(ccxt.InvalidOrder) as caught:
        exchange.create_order(SYMBOL, "limit", "buy", 0.02, price, {"clientOrderId": cid})
    assert '"code":-2010' in str(caught.value) and "Duplicate order sent." in str(caught.value)

    kept = exchange.fetch_order(None, SYMBOL, {"clientOrderId": cid})
    assert (kept["id"], kept["status"], kept["amount"], kept["price"]) == (first["id"], "open", 0.01, price)
    assert [o["orderId"] for o in sandbox.admin.orders(exchange.apiKey)] == [int(first["id"])]
    assert exchange.fetch_balance()["USDT"]["used"] == pytest.approx(0.01 * price)

    # Unique per account for good, not only among open orders (stricter than Binance).
    exchange.cancel_order(first["id"], SYMBOL)
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        exchange.create_order(SYMBOL, "limit", "buy", 0.01, price, {"clientOrderId": cid})


def test_it_refuses_an_order_beyond_the_balance(exchange: ccxt.binance, sandbox) -> None:
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(SYMBOL, "limit", "buy", 1, below_market(exchange, SYMBOL, 0.9))
    with pytest.raises(ccxt.InsufficientFunds):
        exchange.create_order(SYMBOL, "market", "sell", 2)
    assert sandbox.admin.orders(exchange.apiKey) == []
    assert exchange.fetch_balance()["USDT"] == {"free": 10000, "used": 0, "total": 10000}


def test_a_resting_buy_locks_its_funds_and_a_cancel_releases_them(exchange: ccxt.binance, sandbox) -> None:
    price = below_market(exchange, SYMBOL)
    order = exchange.create_order(SYMBOL, "limit", "buy", 0.05, price)
    locked = Decimal(str(price)) * Decimal("0.05")

    balance = exchange.fetch_balance()["USDT"]
    assert balance["used"] == pytest.approx(float(locked))
    assert balance["free"] == pytest.approx(float(10000 - locked))
    assert balance["total"] == pytest.approx(10000)
    admin_view = sandbox.admin.balances(exchange.apiKey)["USDT"]
    assert (admin_view.free, admin_view.locked) == (10000 - locked, locked)

    exchange.cancel_order(order["id"], SYMBOL)
    assert exchange.fetch_balance()["USDT"] == {"free": 10000, "used": 0, "total": 10000}

    sell = exchange.create_order(SYMBOL, "limit", "sell", 0.4, float(exchange.price_to_precision(SYMBOL, price * 2)))
    assert exchange.fetch_balance()["BTC"] == {"free": pytest.approx(0.6), "used": pytest.approx(0.4), "total": 1}
    exchange.cancel_order(sell["id"], SYMBOL)
    assert exchange.fetch_balance()["BTC"] == {"free": 1, "used": 0, "total": 1}


@pytest.fixture
def held_sol(sandbox: SandboxProcess) -> Iterator[str]:
    """SOL/USDT with its random walk paused for the test, and let go afterwards."""
    try:
        yield "SOL/USDT"
    finally:
        sandbox.admin.release_price("SOL/USDT")


def test_a_large_resting_order_fills_partially_when_the_price_crosses_it(
    exchange: ccxt.binance, sandbox: SandboxProcess, held_sol: str
) -> None:
    start = sandbox.admin.set_price(held_sol, "150.00")  # hold: only set_price moves it now
    level_qty = 10  # SOL/USDT's synthetic liquidity per price move
    order = exchange.create_order(held_sol, "limit", "buy", 25, 140.0)
    assert order["status"] == "open" and order["filled"] == 0
    assert start.held

    crossed = sandbox.admin.set_price(held_sol, "139.50")
    assert crossed.fills == 1
    partial = exchange.fetch_order(order["id"], held_sol)
    assert (partial["status"], partial["filled"], partial["remaining"]) == ("open", level_qty, 25 - level_qty)
    assert partial["info"]["status"] == "PARTIALLY_FILLED"

    sandbox.admin.set_price(held_sol, "139.50")
    sandbox.admin.set_price(held_sol, "139.50")
    done = exchange.fetch_order(order["id"], held_sol)
    assert (done["status"], done["filled"], done["remaining"]) == ("closed", 25, 0)
    assert done["average"] == 140.0  # a resting order fills at its own price

    trades = exchange.fetch_my_trades(held_sol)
    assert [t["amount"] for t in trades] == [10, 10, 5]
    assert {(t["order"], t["price"], t["takerOrMaker"]) for t in trades} == {(order["id"], 140.0, "maker")}
    balance = exchange.fetch_balance()
    assert balance["SOL"]["total"] == pytest.approx(25 * 0.999)
    assert balance["USDT"] == {"free": pytest.approx(10000 - 25 * 140), "used": 0, "total": pytest.approx(6500)}


def test_an_order_above_the_price_does_not_fill_when_the_price_stays_away(
    exchange: ccxt.binance, sandbox: SandboxProcess, held_sol: str
) -> None:
    sandbox.admin.set_price(held_sol, "150.00")
    order = exchange.create_order(held_sol, "limit", "buy", 1, 140.0)
    assert sandbox.admin.set_price(held_sol, "145.00").fills == 0
    assert exchange.fetch_order(order["id"], held_sol)["filled"] == 0


def test_ioc_keeps_what_it_can_take_and_fok_takes_all_or_nothing(
    exchange: ccxt.binance, sandbox: SandboxProcess, held_sol: str
) -> None:
    sandbox.admin.set_price(held_sol, "150.00")
    ask = sandbox.admin.price(held_sol).ask
    # Only the best ask level (10 SOL) is at or below this price.
    ioc = exchange.create_order(held_sol, "limit", "buy", 15, float(ask), {"timeInForce": "IOC"})
    assert (ioc["status"], ioc["filled"], ioc["info"]["status"]) == ("expired", 10, "EXPIRED")
    fok = exchange.create_order(held_sol, "limit", "buy", 15, float(ask), {"timeInForce": "FOK"})
    assert (fok["status"], fok["filled"]) == ("expired", 0)
    assert exchange.fetch_balance()["USDT"]["used"] == 0


def test_a_limit_maker_that_would_take_is_refused(exchange: ccxt.binance) -> None:
    ask = exchange.fetch_ticker(SYMBOL)["ask"]
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        exchange.create_order(SYMBOL, "limit", "buy", 0.001, ask * 1.01, {"postOnly": True})


def test_a_market_buy_by_cost_spends_at_most_that_cost(exchange: ccxt.binance) -> None:
    order = exchange.create_order(SYMBOL, "market", "buy", None, None, {"cost": 100})
    assert order["status"] == "closed" and 0 < order["cost"] <= 100
    assert order["info"]["origQuoteOrderQty"] == "100.00000000"


def test_orders_that_break_the_filters_are_refused(exchange: ccxt.binance, sandbox: SandboxProcess) -> None:
    # Raw requests: ccxt's own precision and limit checks would refuse these before sending.
    # ccxt maps -1013 to BadRequest, except for LOT_SIZE and PRICE_FILTER, which it names InvalidOrder.
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
        exchange.privatePostOrder(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.00001",
                "price": "1000",
            }
        )
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        exchange.privatePostOrder({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.000015"})
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
        exchange.privatePostOrder(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.001",
                "price": "50000.001",
            }
        )
    with pytest.raises(ccxt.BadSymbol):
        exchange.privatePostOrder({"symbol": "DOGEUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"})
    assert sandbox.admin.orders(exchange.apiKey) == []


def test_unknown_orders_are_reported_as_not_found(exchange: ccxt.binance) -> None:
    with pytest.raises(ccxt.OrderNotFound) as fetch:
        exchange.fetch_order("999999999", SYMBOL)
    assert '"code":-2013' in str(fetch.value)
    with pytest.raises(ccxt.OrderNotFound) as cancel:
        exchange.cancel_order("999999999", SYMBOL)
    assert '"code":-2011' in str(cancel.value)


def test_another_keys_orders_are_invisible(exchange: ccxt.binance, sandbox: SandboxProcess) -> None:
    other = sandbox.new_key()
    order = exchange.create_order(SYMBOL, "limit", "buy", 0.001, below_market(exchange, SYMBOL))
    stranger = make_binance(sandbox, other.api_key, other.secret)
    with pytest.raises(ccxt.OrderNotFound):
        stranger.fetch_order(order["id"], SYMBOL)
    with pytest.raises(ccxt.OrderNotFound):
        stranger.cancel_order(order["id"], SYMBOL)
    assert exchange.fetch_order(order["id"], SYMBOL)["status"] == "open"
