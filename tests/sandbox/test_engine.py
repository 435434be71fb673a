"""The engine and price walk in-process: determinism and exact balance accounting."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from apps.sandbox import errors
from apps.sandbox.context import Options, Sandbox
from apps.sandbox.feed import Feed, Market
from apps.sandbox.ids import ID_BASE
from apps.sandbox.orders import parse_new_order
from apps.sandbox.state import KeySpec, Status, new_key_material
from apps.sandbox.symbols import SYMBOLS

NOW = 1_800_000_000_000


def walk(seed: int, symbol: str, steps: int) -> list[Decimal]:
    market = Market(SYMBOLS[symbol], seed, NOW)
    return [market.move() for _ in range(steps)]


def test_the_price_walk_is_determined_by_the_seed() -> None:
    assert walk(7, "BTCUSDT", 50) == walk(7, "BTCUSDT", 50)
    assert walk(7, "BTCUSDT", 50) != walk(8, "BTCUSDT", 50)
    assert walk(7, "BTCUSDT", 50) != walk(7, "ETHUSDT", 50)
    prices = walk(7, "SOLUSDT", 200)
    assert len(set(prices)) > 50 and all(p % Decimal("0.01") == 0 for p in prices)


def test_history_candles_end_at_the_start_price() -> None:
    market = Feed(7, NOW).market("ETHBTC")
    candles = market.klines("1h", None, None, 24, NOW)
    assert len(candles) == 24
    assert candles[-1].close == Decimal("0.05000")
    assert all(b.open_time - a.open_time == 3_600_000 for a, b in itertools.pairwise(candles))


@pytest.fixture
def sandbox() -> Sandbox:
    key = KeySpec(new_key_material(), new_key_material())
    return Sandbox([key], Options(seed=7), clock=lambda: NOW)


def order(sandbox: Sandbox, **params: str) -> tuple[Status, Decimal]:
    account = next(iter(sandbox.state.accounts.values()))
    placed = sandbox.engine.place(account, parse_new_order(params, sandbox.feed.market(params["symbol"]).price))
    return placed.status, placed.executed_qty


def test_fills_move_balances_exactly_with_fees_in_the_received_asset(sandbox: Sandbox) -> None:
    account = next(iter(sandbox.state.accounts.values()))
    bid, ask = sandbox.feed.market("BTCUSDT").best()
    assert order(sandbox, symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01") == (
        Status.FILLED,
        Decimal("0.01"),
    )
    assert account.balance("BTC").free == Decimal(1) + Decimal("0.01") - Decimal("0.00001")
    assert account.balance("USDT").free == Decimal(10000) - ask * Decimal("0.01")

    status, sold = order(sandbox, symbol="BTCUSDT", side="SELL", type="MARKET", quoteOrderQty="100")
    assert status is Status.FILLED and sold * bid <= 100
    proceeds = sold * bid
    fee = (proceeds * Decimal("0.001")).quantize(Decimal("0.00000001"), rounding="ROUND_UP")
    assert account.balance("USDT").free == Decimal(10000) - ask * Decimal("0.01") + proceeds - fee
    assert account.balance("USDT").locked == account.balance("BTC").locked == 0


def test_a_resting_order_that_fills_at_a_better_price_gets_the_difference_back(sandbox: Sandbox) -> None:
    account = next(iter(sandbox.state.accounts.values()))
    _, ask = sandbox.feed.market("BTCUSDT").best()
    limit = ask + 100
    # Crosses: it takes the best ask (0.02 BTC) and rests the rest at its own price.
    status, filled = order(
        sandbox, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.02", price=str(limit)
    )
    assert (status, filled) == (Status.FILLED, Decimal("0.02"))
    assert account.balance("USDT").free == Decimal(10000) - ask * Decimal("0.02")
    assert account.balance("USDT").locked == 0


def test_an_unsupported_order_type_is_refused_before_anything_happens(sandbox: Sandbox) -> None:
    with pytest.raises(errors.BinanceError) as caught:
        order(sandbox, symbol="BTCUSDT", side="BUY", type="STOP_LOSS", quantity="0.01")
    assert caught.value.code == -1013
    assert sandbox.state.next_order_id == ID_BASE + 1
