"""The exchange port under the sandbox's injected faults (apps/sandbox/faults.py), through real ccxt.

An order whose answer was lost is looked up before it is sent again; Binance's own 5xx answers are temporary
(retried; for an order, an unknown outcome); a 429's Retry-After holds for every call on the client; -1021 is
fixed by syncing the clock once. Every fault is narrowed to the test's own key and cleared afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from apps.exchanges import port
from tests.keys import Key

SYMBOL = "BTC/USDT"


@pytest.fixture(autouse=True)
def faults_cleared(sandbox: Any) -> Iterator[None]:
    try:
        yield
    finally:
        sandbox.admin.clear_faults()


def buy(exchange: port.Exchange, cid: str) -> port.RemoteOrder:
    return exchange.place_order(
        symbol=SYMBOL, side="buy", type="limit", amount=Decimal("0.001"), price=Decimal("50000"), client_order_id=cid
    )


def order_requests(sandbox: Any, key: Key) -> int:
    """Order placements the exchange handled for the key (refused duplicates included)."""
    return int(sandbox.admin.order_count().for_key(key.api_key))


def test_an_order_whose_answer_was_lost_is_looked_up_and_adopted_not_sent_again(
    sandbox: Any, new_key: Callable[..., Key], pinned_price: None
) -> None:
    key = new_key()
    exchange = key.exchange()
    sandbox.admin.timeout_after_accept(count=1, drop=True, api_key=key.api_key)
    placed = buy(exchange, "lost-answer-1")
    assert placed.client_order_id == "lost-answer-1" and placed.status == "open"
    assert [o["clientOrderId"] for o in sandbox.admin.open_orders(key.api_key)] == ["lost-answer-1"]
    # The port asked the exchange about the order instead of sending it a second time.
    assert order_requests(sandbox, key) == 1
    assert sandbox.admin.faults().count("timeout_after_accept") >= 1


@pytest.mark.parametrize(("status", "body"), [(500, "json"), (502, "json"), (503, "json"), (502, "html")])
def test_a_5xx_answer_to_an_order_is_an_unknown_outcome_resolved_by_its_client_order_id(
    sandbox: Any, new_key: Callable[..., Key], pinned_price: None, status: int, body: str
) -> None:
    key = new_key()
    exchange = key.exchange()
    sandbox.admin.fail_requests(status, body=body, count=1, api_key=key.api_key, path_prefix="/api/v3/order")
    placed = buy(exchange, f"after-{status}-{body}")
    # The first POST was not handled (the sandbox answered 5xx without placing it): the lookup found nothing,
    # so the same id was sent again, once.
    assert [o["clientOrderId"] for o in sandbox.admin.orders(key.api_key)] == [placed.client_order_id]
    assert order_requests(sandbox, key) == 1
    assert [e["method"] for e in sandbox.admin.faults().logged("error") if e["api_key"] == key.api_key] == ["POST"]


def test_binances_own_5xx_answers_are_temporary_retried_then_unavailable(
    sandbox: Any, new_key: Callable[..., Key], settings: Any
) -> None:
    settings.EXCHANGE_RETRIES = 2
    key = new_key()
    exchange = key.exchange()
    sandbox.admin.fail_requests(500, count=2, api_key=key.api_key)  # -1000 "unknown error"
    assert exchange.balances().free["USDT"] == Decimal("10000")  # the third attempt got through
    sandbox.admin.fail_requests(503, count=3, api_key=key.api_key)  # -1008 "overloaded"
    with pytest.raises(port.ExchangeUnavailable, match="overloaded"):
        exchange.balances()
    assert sandbox.admin.faults().count("error") >= 5


def test_an_order_lookup_that_fails_too_leaves_the_outcome_unknown(
    sandbox: Any, new_key: Callable[..., Key], pinned_price: None, settings: Any
) -> None:
    settings.EXCHANGE_RETRIES = 1
    key = new_key()
    exchange = key.exchange()
    sandbox.admin.timeout_after_accept(count=1, drop=True, api_key=key.api_key)
    sandbox.admin.fail_requests(502, body="json", seconds=30, api_key=key.api_key, method="GET")
    with pytest.raises(port.ExchangeUnavailable):
        buy(exchange, "unknown-1")
    sandbox.admin.clear_faults()
    # Placed once, never again; the caller finds it by its id later.
    assert order_requests(sandbox, key) == 1
    assert exchange.order(symbol=SYMBOL, client_order_id="unknown-1").status == "open"


def test_a_429s_retry_after_is_waited_for_up_to_a_limit(
    sandbox: Any, new_key: Callable[..., Key], settings: Any
) -> None:
    settings.EXCHANGE_RETRIES = 3
    key = new_key()
    exchange = key.exchange()
    before = sandbox.admin.faults().count("rate_limit")
    # Refused for 3 s, and told so: one refusal, then the port waits the Retry-After before asking again
    # (its own 1-2-4 s backoff would have asked twice more inside the 3 s).
    sandbox.admin.rate_limit_burst(seconds=3, retry_after_s=3, api_key=key.api_key)
    assert exchange.balances().free["BTC"] == Decimal("1")
    assert sandbox.admin.faults().count("rate_limit") == before + 1

    # A Retry-After of minutes is waited for EXCHANGE_RETRY_AFTER_MAX_S at a time: still a bounded few requests.
    settings.EXCHANGE_RETRY_AFTER_MAX_S = 1
    settings.EXCHANGE_RETRIES = 2
    sandbox.admin.rate_limit_burst(seconds=600, retry_after_s=600, api_key=key.api_key)
    with pytest.raises(port.ExchangeUnavailable, match="unavailable"):
        exchange.balances()
    assert sandbox.admin.faults().count("rate_limit") == before + 4


@pytest.mark.parametrize("offset_ms", [-2000, 70_000])
def test_a_clock_off_by_seconds_is_synced_once_and_the_order_is_sent_once_more_only(
    sandbox: Any, new_key: Callable[..., Key], pinned_price: None, offset_ms: int
) -> None:
    key = new_key()
    exchange = key.exchange()
    exchange.markets()
    before = sandbox.admin.faults().count("clock_offset")
    sandbox.admin.set_clock_offset(offset_ms)
    placed = buy(exchange, f"clock-{offset_ms}")
    assert [o["clientOrderId"] for o in sandbox.admin.orders(key.api_key)] == [placed.client_order_id]
    assert exchange.balances().free["BTC"] == Decimal("1")  # the client keeps the exchange's time now
    # One stale timestamp refused (-1021), the order's own first attempt; never a second.
    assert sandbox.admin.faults().count("clock_offset") == before + 1


def test_the_async_path_counts_the_exchanges_refusals_and_gets_through(
    sandbox: Any, new_key: Callable[..., Key], pinned_price: None, settings: Any
) -> None:
    settings.EXCHANGE_RETRIES = 3
    key = new_key()
    buy(key.exchange(), "async-1")
    sandbox.admin.fail_requests(500, count=2, api_key=key.api_key, path_prefix="/api/v3/openOrders")

    async def cancel() -> tuple[int, list[port.RemoteOrder]]:
        session = port.AsyncSession(rate_limit=False)
        try:
            exchange = session.exchange(exchange_id="sandbox", credentials=key.form())
            await exchange.load_markets([SYMBOL])
            await exchange.cancel_all(SYMBOL)
            return exchange.troubles, await exchange.open_orders(SYMBOL)
        finally:
            await session.close()

    troubles, left = asyncio.run(cancel())
    assert troubles == 2 and left == [] and sandbox.admin.open_orders(key.api_key) == []
