"""point_at_sandbox: every URL of all three ccxt binance clients goes to the sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest

from apps.sandbox.ccxt_config import SANDBOX_OPTIONS, point_at_sandbox
from tests.fixtures.sandbox import SandboxProcess


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("client_class", [ccxt.binance, ccxt.async_support.binance, ccxt.pro.binance])
def test_it_rewrites_every_url_and_sets_the_spot_options(client_class: type) -> None:
    client = client_class()
    point_at_sandbox(client, "http://127.0.0.1:8765")
    urls = [u for name in ("api", "test", "demo") for u in strings(client.urls.get(name, {}))]
    assert urls and all(u.startswith(("http://127.0.0.1:8765/", "ws://127.0.0.1:8765/")) for u in urls)
    assert (client.urls["api"]["public"], client.urls["api"]["sapi"]) == (
        "http://127.0.0.1:8765/api/v3",
        "http://127.0.0.1:8765/sapi/v1",
    )
    if client_class is ccxt.pro.binance:
        assert client.urls["api"]["ws"]["spot"] == "ws://127.0.0.1:8765/ws"
        assert client.urls["api"]["ws"]["ws-api"]["spot"] == "ws://127.0.0.1:8765/ws-api/v3"
    for name, value in SANDBOX_OPTIONS.items():
        assert client.options[name] == value
    client.set_sandbox_mode(True)  # the testnet URLs were rewritten too: still the sandbox
    assert client.urls["api"]["public"] == "http://127.0.0.1:8765/api/v3"


def test_the_async_client_trades_against_the_sandbox(sandbox: SandboxProcess, sandbox_key: tuple[str, str]) -> None:
    api_key, secret = sandbox_key

    async def scenario() -> None:
        exchange = ccxt.async_support.binance({"apiKey": api_key, "secret": secret})
        point_at_sandbox(exchange, sandbox.url)
        try:
            await exchange.load_markets()
            assert (await exchange.fetch_balance())["USDT"]["free"] == 10000
            order = await exchange.create_order("ETH/BTC", "market", "buy", 0.1)
            assert order["status"] == "closed" and order["filled"] == 0.1 and order["fee"]["currency"] == "ETH"
            assert (await exchange.fetch_balance())["ETH"]["total"] == pytest.approx(0.1 * 0.999)
        finally:
            await exchange.close()

    asyncio.run(scenario())


def test_an_endpoint_the_sandbox_lacks_fails_clearly_instead_of_reaching_binance(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    exchange = ccxt.binance({"apiKey": sandbox_key[0], "secret": sandbox_key[1]})
    point_at_sandbox(exchange, sandbox.url)
    with pytest.raises(ccxt.BadRequest, match="sandbox exchange does not implement GET /fapi/v2/balance"):
        exchange.fapiPrivateV2GetBalance()
