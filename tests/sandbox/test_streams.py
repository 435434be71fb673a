"""The websocket protocols, spoken raw, and ccxt.pro's refusal of a bad user-data signature."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import ccxt
import ccxt.pro
import pytest

from apps.sandbox.ccxt_config import point_at_sandbox
from apps.sandbox.signing import hmac_hex, ws_payload
from tests.fixtures.sandbox import SandboxProcess


def ws_url(sandbox: SandboxProcess, path: str) -> str:
    return sandbox.url.replace("http://", "ws://") + path


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    message = await asyncio.wait_for(ws.receive(), 10)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def reply_to(ws: aiohttp.ClientWebSocketResponse, request_id: int | str) -> Any:
    """Skip stream data until the answer to `request_id`."""
    while True:
        message = await receive_json(ws)
        if isinstance(message, dict) and message.get("id") == request_id:
            return message


def test_market_streams_speak_binances_subscribe_protocol(sandbox: SandboxProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(sandbox, "/ws")) as ws:
            streams = ["btcusdt@trade", "btcusdt@bookTicker", "btcusdt@kline_1m"]
            await ws.send_json({"method": "SUBSCRIBE", "params": streams, "id": 1})
            assert await reply_to(ws, 1) == {"result": None, "id": 1}

            seen: dict[str, Any] = {}
            while len(seen) < 3:
                message = await receive_json(ws)
                kind = message.get("e", "bookTicker" if "u" in message else None)
                seen.setdefault(kind, message)
            assert seen["trade"]["s"] == "BTCUSDT" and float(seen["trade"]["p"]) > 0
            assert float(seen["bookTicker"]["b"]) < float(seen["bookTicker"]["a"])
            assert seen["kline"]["k"]["i"] == "1m" and seen["kline"]["k"]["t"] % 60_000 == 0

            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
            assert await reply_to(ws, 2) == {"result": sorted(streams), "id": 2}
            await ws.send_json({"method": "UNSUBSCRIBE", "params": streams, "id": 3})
            assert await reply_to(ws, 3) == {"result": None, "id": 3}
            await ws.send_json({"method": "SUBSCRIBE", "params": ["dogeusdt@trade"], "id": 4})
            refused = await reply_to(ws, 4)
            assert refused["error"]["code"] == 2

        combined = ws_url(sandbox, "/stream?streams=ethusdt@trade")
        async with aiohttp.ClientSession() as session, session.ws_connect(combined) as ws:
            message = await receive_json(ws)
            assert message["stream"] == "ethusdt@trade" and message["data"]["e"] == "trade"

    asyncio.run(scenario())


def test_the_websocket_api_delivers_user_data_after_a_signed_subscribe(
    sandbox: SandboxProcess, sandbox_key: tuple[str, str]
) -> None:
    api_key, secret = sandbox_key

    def signed(params: dict[str, Any], with_secret: str) -> dict[str, Any]:
        return {**params, "signature": hmac_hex(with_secret, ws_payload(params))}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(sandbox, "/ws-api/v3")) as ws:
            params = {"apiKey": api_key, "timestamp": sandbox.admin.health()["server_time"]}
            await ws.send_json(
                {"id": "a", "method": "userDataStream.subscribe.signature", "params": signed(params, "x")}
            )
            refused = await reply_to(ws, "a")
            assert (refused["status"], refused["error"]["code"]) == (400, -1022)

            await ws.send_json(
                {"id": "b", "method": "userDataStream.subscribe.signature", "params": signed(params, secret)}
            )
            accepted = await reply_to(ws, "b")
            assert accepted == {"id": "b", "status": 200, "result": {"subscriptionId": 0}}

            sandbox.admin.set_balances(api_key, {"ETH": "2"})
            event = await receive_json(ws)
            assert event["subscriptionId"] == 0
            assert event["event"]["e"] == "outboundAccountPosition"
            assert {"a": "ETH", "f": "2.00000000", "l": "0.00000000"} in event["event"]["B"]

        # The session form: log on once, then subscribe without signing again.
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(sandbox, "/ws-api/v3")) as ws:
            await ws.send_json({"id": 1, "method": "userDataStream.subscribe"})
            assert (await reply_to(ws, 1))["error"]["code"] == -2015
            params = {"apiKey": api_key, "timestamp": sandbox.admin.health()["server_time"]}
            await ws.send_json({"id": 2, "method": "session.logon", "params": signed(params, secret)})
            assert (await reply_to(ws, 2))["result"]["apiKey"] == api_key
            await ws.send_json({"id": 3, "method": "userDataStream.subscribe"})
            assert (await reply_to(ws, 3))["result"] == {"subscriptionId": 0}
            await ws.send_json({"id": 4, "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 0}})
            assert (await reply_to(ws, 4))["result"] == {}

    asyncio.run(scenario())


def test_ccxt_pro_refuses_user_data_with_a_bad_signature(sandbox: SandboxProcess, sandbox_key: tuple[str, str]) -> None:
    """ccxt.pro 4.5.90 loses the AuthenticationError here: handle_ws_error already removed
    client.subscriptions["spot"], so the cleanup in ensure_user_data_stream_ws_subscribe_signature
    raises KeyError("spot") while handling it. The refusal itself is Binance's (-1022)."""
    api_key, _ = sandbox_key

    async def scenario() -> None:
        exchange = ccxt.pro.binance({"apiKey": api_key, "secret": "wrong"})
        point_at_sandbox(exchange, sandbox.url)
        try:
            await exchange.load_markets()
            with pytest.raises((ccxt.AuthenticationError, KeyError)) as caught:
                await asyncio.wait_for(exchange.watch_orders("BTC/USDT"), 10)
            refusal = caught.value if isinstance(caught.value, ccxt.AuthenticationError) else caught.value.__context__
            assert isinstance(refusal, ccxt.AuthenticationError)
            assert '"code":-1022' in str(refusal)
        finally:
            await exchange.close()

    asyncio.run(scenario())
