"""The exchange port against the sandbox: the sync and async paths retry what is safe, translate the rest, and
never double an order."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from apps.exchanges import port
from launcher.embedded import free_port
from tests.keys import Key

SYMBOL = "BTC/USDT"


def test_rate_limiting_is_retried_then_reported_as_unavailable(
    sandbox: Any, new_key: Callable[..., Key], settings: Any
) -> None:
    settings.EXCHANGE_RETRIES = 1
    settings.EXCHANGE_RETRY_AFTER_MAX_S = 1  # the limiter asks for the rest of its minute; wait 1 s of it
    key = new_key()
    sandbox.admin.set_rate_limit(2, api_key=key.api_key)
    exchange = key.exchange()
    succeeded = 0
    try:
        with pytest.raises(port.ExchangeUnavailable, match="unavailable"):
            for _ in range(5):
                exchange.balances()
                succeeded += 1
    finally:
        sandbox.admin.set_rate_limit(100000, api_key=key.api_key)
    assert 1 <= succeeded < 5  # served until the limit, then 429 (retried once) became ExchangeUnavailable


def test_the_async_path_retries_a_rate_limit_too_and_then_succeeds(
    sandbox: Any, new_key: Callable[..., Key], settings: Any
) -> None:
    settings.EXCHANGE_RETRIES = 3
    # The sandbox's per-minute limiter asks for the rest of its minute (Retry-After ~59 s); the port waits at most
    # this long before asking again.
    settings.EXCHANGE_RETRY_AFTER_MAX_S = 1
    key = new_key()
    key.raw_ccxt(sandbox.url).create_order(SYMBOL, "limit", "buy", 0.001, 30000)
    lifted = threading.Event()

    async def cancel_everything() -> list[port.RemoteOrder]:
        session = port.AsyncSession()
        try:
            exchange = session.exchange(exchange_id="sandbox", credentials=key.form())
            await exchange.load_markets()
            sandbox.admin.set_rate_limit(1, api_key=key.api_key)  # spent already: the cancel below meets 429

            # The exchange lets the key in again while the port waits before its retry (1 s after a 429).
            def lift() -> None:
                sandbox.admin.set_rate_limit(100000, api_key=key.api_key)
                lifted.set()

            threading.Timer(0.3, lift).start()
            await exchange.cancel_all(SYMBOL)
            # Only a retry can have waited for the limit to lift: the first attempt met 429.
            assert lifted.is_set()
            return await exchange.open_orders(SYMBOL)
        finally:
            await session.close()

    try:
        left = asyncio.run(cancel_everything())
    finally:
        sandbox.admin.set_rate_limit(100000, api_key=key.api_key)
    assert lifted.is_set() and left == [] and sandbox.admin.open_orders(key.api_key) == []


def test_a_refused_connection_becomes_exchange_unavailable_on_both_paths(settings: Any) -> None:
    settings.SANDBOX_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.EXCHANGE_RETRIES = 1
    credentials = {"apiKey": "a" * 64, "secret": "b" * 64}
    with pytest.raises(port.ExchangeUnavailable) as caught:
        port.Exchange(exchange_id="sandbox", credentials=credentials).balances()
    assert "http" not in caught.value.message  # no URL (they can carry signed queries)

    async def open_orders() -> None:
        session = port.AsyncSession()
        try:
            await session.exchange(exchange_id="sandbox", credentials=credentials).open_orders(SYMBOL)
        finally:
            await session.close()

    with pytest.raises(port.ExchangeUnavailable) as caught_async:
        asyncio.run(open_orders())
    assert "http" not in caught_async.value.message


def test_a_wrong_secret_is_key_rejected_without_retry(sandbox: Any, new_key: Callable[..., Key]) -> None:
    key = new_key()
    exchange = port.Exchange(exchange_id="sandbox", credentials={"apiKey": key.api_key, "secret": "x" * 64})
    before = sandbox.admin.order_count().total
    with pytest.raises(port.KeyRejected, match="Signature for this request is not valid"):
        exchange.balances()
    assert sandbox.admin.order_count().total == before


def test_placing_the_same_client_order_id_twice_adopts_the_first_order(
    sandbox: Any, new_key: Callable[..., Key], pinned_price: None
) -> None:
    key = new_key()
    exchange = key.exchange()

    def place() -> port.RemoteOrder:
        return exchange.place_order(
            symbol=SYMBOL,
            side="buy",
            type="limit",
            amount=Decimal("0.001"),
            price=Decimal("50000"),
            client_order_id="port-dup-1",
        )

    first = place()
    again = place()  # a retry after a lost answer
    assert first.id == again.id and again.client_order_id == "port-dup-1"
    assert len(sandbox.admin.open_orders(key.api_key)) == 1
    assert exchange.order(symbol=SYMBOL, client_order_id="port-dup-1").status == "open"


def test_cancelling_an_order_already_gone_gives_the_exchanges_word_on_it(
    sandbox: Any, new_key: Callable[..., Key], pinned_price: None
) -> None:
    key = new_key()
    exchange = key.exchange()
    placed = exchange.place_order(
        symbol=SYMBOL, side="buy", type="limit", amount=Decimal("0.001"), price=Decimal("50000"), client_order_id="c-1"
    )
    key.raw_ccxt(sandbox.url).cancel_order(placed.id, SYMBOL)  # behind the port's back
    gone = exchange.cancel_order(symbol=SYMBOL, exchange_order_id=placed.id, client_order_id="c-1")
    assert gone.status == "canceled" and gone.id == placed.id


def test_values_come_back_as_decimals(sandbox: Any, new_key: Callable[..., Key], pinned_price: None) -> None:
    exchange = new_key().exchange()
    balances = exchange.balances()
    assert balances.total["USDT"] == Decimal("10000") and balances.total["BTC"] == Decimal("1")
    assert exchange.price(SYMBOL) > 0 and isinstance(exchange.price(SYMBOL), Decimal)
    candles = exchange.candles(SYMBOL, limit=5)
    assert len(candles) == 5 and all(isinstance(c.close, Decimal) for c in candles)
    market = exchange.markets()[SYMBOL]
    assert (market.base, market.quote, market.spot) == ("BTC", "USDT", True)


def test_required_credentials_follow_the_exchange(sandbox_url: str) -> None:
    assert port.required_credentials("sandbox") == ["apiKey", "secret"]
    assert port.required_credentials("kucoin") == ["apiKey", "secret", "password"]
    with pytest.raises(port.ExchangeError, match="Unknown exchange"):
        port.required_credentials("nope")


def test_a_client_never_shows_its_credentials(new_key: Callable[..., Key]) -> None:
    key = new_key()
    exchange = key.exchange()
    assert key.secret not in repr(exchange) and key.api_key not in repr(exchange)


def test_a_kill_session_takes_a_spare_client_built_without_a_key_and_never_gives_it_back(
    sandbox: Any, new_key: Callable[..., Key]
) -> None:
    """The control worker builds clients ahead of a kill (no key, markets set): the kill's session gives one an
    account's key instead of building a client then, and closes it with the session, never returning it."""
    from apps.exchanges.port import aio

    key = new_key()
    key.raw_ccxt(sandbox.url).create_order(SYMBOL, "limit", "buy", 0.001, 30000)
    aio._spares.pop("sandbox", None)
    assert aio.spares_keep("sandbox", 2) == 2 and aio.spares_keep("sandbox", 2) == 0  # built once
    spares = list(aio._spares["sandbox"])
    assert all(not c.apiKey and not c.secret for c in spares)

    async def cancel_with(rate_limit: bool, credentials: dict[str, str]) -> tuple[Any, int]:
        session = port.AsyncSession(rate_limit=rate_limit)
        try:
            exchange = session.exchange(exchange_id="sandbox", credentials=credentials)
            await exchange.load_markets([SYMBOL])
            await exchange.cancel_all(SYMBOL)
            return exchange._client, len(await exchange.open_orders(SYMBOL))
        finally:
            await session.close()

    client, left = asyncio.run(cancel_with(False, key.form()))
    assert client in spares and client.apiKey == key.api_key  # a spare, given this account's key
    assert left == 0 and sandbox.admin.open_orders(key.api_key) == []  # and it cancelled on the exchange
    assert aio.spares_held("sandbox") == 1 and client not in aio._spares["sandbox"]  # not given back
    # A session with ccxt's rate limiter (a bot's, not the kill's) builds its own client.
    client, _ = asyncio.run(cancel_with(True, key.form()))
    assert client not in spares and aio.spares_held("sandbox") == 1
    # A credential that is not one of the exchange's plain fields: a new client is built with it.
    client, _ = asyncio.run(cancel_with(False, key.form(accountLabel="x")))
    assert client not in spares and aio.spares_held("sandbox") == 0
    aio._spares.pop("sandbox", None)
