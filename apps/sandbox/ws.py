"""Websocket endpoints: market streams (`/ws`, `/ws/<anything>`, `/stream`) and the WebSocket API.

ccxt.pro (4.5.x) opens spot market streams at `<ws>/<n>` and sends
`{"method": "SUBSCRIBE", "params": [...], "id": n}`; it gets user data for spot from the
WebSocket API at `/ws-api/v3` with a signed `userDataStream.subscribe.signature` request, after
which events arrive as `{"subscriptionId": n, "event": {...}}`. No listenKey is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from apps.sandbox import errors
from apps.sandbox.context import SANDBOX, Sandbox
from apps.sandbox.errors import BinanceError
from apps.sandbox.hub import Connection, parse_stream
from apps.sandbox.signing import verify_ws
from apps.sandbox.symbols import SYMBOLS

logger = logging.getLogger(__name__)


TextHandler = Callable[[Sandbox, Connection, str], Awaitable[None]]


async def _serve(request: web.Request, combined: bool, market: bool, on_text: TextHandler) -> web.StreamResponse:
    """Run one websocket: its writer task, and `on_text` for each text frame."""
    sandbox: Sandbox = request.app[SANDBOX]
    if sandbox.faults.refuses_websocket("market" if market else "user", request.path):
        return web.Response(status=503, text="503 Service Unavailable (sandbox fault: websockets refused)")
    ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
    await ws.prepare(request)
    conn = Connection(ws, combined, request.remote, market, request.transport)
    sandbox.hub.connections.add(conn)
    pump = asyncio.get_running_loop().create_task(conn.pump())
    try:
        if market:
            for stream in _initial_streams(request, combined):
                if parse_stream(stream, SYMBOLS) is None:
                    await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=f"invalid stream {stream}".encode())
                    return ws
                sandbox.hub.subscribe(conn, stream)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await on_text(sandbox, conn, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        sandbox.hub.drop(conn)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return ws


def _initial_streams(request: web.Request, combined: bool) -> list[str]:
    if combined:
        return [s for s in request.query.get("streams", "").split("/") if s]
    name = request.match_info.get("name", "")
    # `/ws/<n>` (ccxt's stream index) carries no stream; `/ws/btcusdt@trade` names one.
    return [s for s in name.split("/") if "@" in s]


# -- market streams --------------------------------------------------------------------------


async def _market_control(sandbox: Sandbox, conn: Connection, text: str) -> None:
    """SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, answered as Binance does."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        conn.send({"error": {"code": 3, "msg": f"Invalid JSON: {exc.msg}"}, "id": None})
        return
    if not isinstance(message, dict):
        conn.send({"error": {"code": 3, "msg": "Invalid JSON: expected an object"}, "id": None})
        return
    request_id = message.get("id")
    method = message.get("method")
    params = message.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            conn.send(
                {
                    "error": {"code": 2, "msg": "Invalid request: params must be a list of stream names"},
                    "id": request_id,
                }
            )
            return
        bad = [p for p in params if parse_stream(p, SYMBOLS) is None]
        if bad:
            conn.send({"error": {"code": 2, "msg": f"Invalid request: unknown stream {bad[0]!r}"}, "id": request_id})
            return
        for stream in params:
            if method == "SUBSCRIBE":
                sandbox.hub.subscribe(conn, stream)
            else:
                sandbox.hub.unsubscribe(conn, stream)
        conn.send({"result": None, "id": request_id})
    elif method == "LIST_SUBSCRIPTIONS":
        conn.send({"result": sorted(conn.streams), "id": request_id})
    elif method == "SET_PROPERTY":
        conn.send({"result": None, "id": request_id})
    elif method == "GET_PROPERTY":
        conn.send({"result": conn.combined, "id": request_id})
    else:
        conn.send({"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": request_id})


async def market_streams(request: web.Request) -> web.StreamResponse:
    return await _serve(request, combined=False, market=True, on_text=_market_control)


async def combined_streams(request: web.Request) -> web.StreamResponse:
    return await _serve(request, combined=True, market=True, on_text=_market_control)


# -- WebSocket API ---------------------------------------------------------------------------


def _params(message: dict[str, Any]) -> dict[str, Any]:
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise errors.invalid_value("params")
    return params


def _dispatch(sandbox: Sandbox, conn: Connection, method: Any, params: dict[str, Any]) -> Any:
    now = sandbox.server_now()
    if method == "ping":
        return {}
    if method == "time":
        return {"serverTime": now}
    if method == "userDataStream.subscribe.signature":
        account = verify_ws(sandbox.state, params, conn.peer, now)
        return {"subscriptionId": sandbox.hub.add_user(conn, account.api_key)}
    if method == "session.logon":
        account = verify_ws(sandbox.state, params, conn.peer, now)
        conn.session_key = account.api_key
        return _session(conn, now)
    if method == "session.status":
        return _session(conn, now)
    if method == "session.logout":
        conn.session_key = None
        return _session(conn, now)
    if method == "userDataStream.subscribe":
        if conn.session_key is None or conn.session_key not in sandbox.state.accounts:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return {"subscriptionId": sandbox.hub.add_user(conn, conn.session_key)}
    if method == "userDataStream.unsubscribe":
        subscription_id = params.get("subscriptionId")
        if subscription_id is None:
            for sid in list(conn.user_subscriptions):
                sandbox.hub.remove_user(conn, sid)
        elif not sandbox.hub.remove_user(conn, int(subscription_id)):
            raise BinanceError(-2035, "User Data Stream subscription not active.")
        return {}
    if method == "session.subscriptions":
        return [{"subscriptionId": sid} for sid in sorted(conn.user_subscriptions)]
    raise errors.unsupported_operation(f"the sandbox WebSocket API has no method {method!r}")


def _session(conn: Connection, now: int) -> dict[str, Any]:
    return {
        "apiKey": conn.session_key,
        "authorizedSince": now if conn.session_key else None,
        "connectedSince": now,
        "returnRateLimits": False,
        "serverTime": now,
        "userDataStream": bool(conn.user_subscriptions),
    }


async def _ws_api_request(sandbox: Sandbox, conn: Connection, text: str) -> None:
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        conn.send({"id": None, "status": 400, "error": {"code": -1100, "msg": "Malformed request: not JSON."}})
        return
    if not isinstance(message, dict):
        conn.send({"id": None, "status": 400, "error": {"code": -1100, "msg": "Malformed request."}})
        return
    request_id = message.get("id")
    try:
        result = _dispatch(sandbox, conn, message.get("method"), _params(message))
    except BinanceError as exc:
        conn.send({"id": request_id, "status": exc.status, "error": exc.body()})
        return
    except (TypeError, ValueError) as exc:
        logger.info("ws-api request refused: %s", exc.__class__.__name__)
        conn.send({"id": request_id, "status": 400, "error": {"code": -1100, "msg": "Malformed request."}})
        return
    conn.send({"id": request_id, "status": 200, "result": result})


async def ws_api(request: web.Request) -> web.StreamResponse:
    return await _serve(request, combined=False, market=False, on_text=_ws_api_request)


def setup(app: web.Application) -> None:
    app.router.add_get("/ws", market_streams)
    app.router.add_get("/ws/{name:.*}", market_streams)
    app.router.add_get("/stream", combined_streams)
    app.router.add_get("/ws-api/v3", ws_api)
