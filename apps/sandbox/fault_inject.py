"""Where the fault switches (apps.sandbox.faults) act: a middleware on REST requests, and the websocket drop."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import WSCloseCode, web

from apps.sandbox import errors
from apps.sandbox.context import SANDBOX, Sandbox
from apps.sandbox.faults import ACCEPTED_REQUESTS, REST_PREFIXES, Faults, Switch, WsDrop, retry_after
from apps.sandbox.hub import Connection

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Binance's JSON answers to internal failures (ccxt 4.5.90 maps all three codes to OperationFailed).
JSON_5XX = {
    500: (-1000, "An unknown error occurred while processing the request."),
    502: (-1001, "Internal error; unable to process your request. Please try again."),
    503: (-1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
}
# What a gateway in front of the API answers when the API behind it is away.
GATEWAY_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
)
WS_CLOSE_TIMEOUT_S = 2.0


def compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def body_json(response: web.StreamResponse) -> Any:
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        with contextlib.suppress(ValueError):
            return json.loads(response.body)
    return None


def failure_response(switch: Switch) -> web.Response:
    status: int = switch.values["status"]
    if switch.values["body"] == "html":
        page = GATEWAY_PAGE.format(status=status, reason=HTTPStatus(status).phrase)
        return web.Response(status=status, text=page, content_type="text/html")
    code, msg = JSON_5XX[status]
    return web.Response(status=status, text=compact({"code": code, "msg": msg}), content_type="application/json")


def throttled_response(sandbox: Sandbox, switch: Switch) -> web.Response:
    refusal = errors.too_many_requests(sandbox.state.default_rate_limit, retry_after(switch))
    return web.Response(
        status=refusal.status, text=compact(refusal.body()), content_type="application/json", headers=refusal.headers
    )


async def answer_after_accept(request: web.Request, faults: Faults, response: web.StreamResponse) -> web.StreamResponse:
    """An accepted order placement (or cancel-all): held past the client's timeout, or its connection closed
    unanswered. The switch's match says which of the two."""
    switch = faults.take("timeout_after_accept", request)
    if switch is None:
        return response
    answer = body_json(response)
    placed = answer if isinstance(answer, dict) else {}  # a cancel-all answers with a list: no one order to name
    drop = bool(switch.values["drop"])
    faults.record_request(
        "timeout_after_accept",
        request,
        None if drop else response.status,
        order_id=placed.get("orderId"),
        client_order_id=placed.get("clientOrderId"),
        symbol=placed.get("symbol"),
        dropped=drop,
    )
    if drop:
        if request.transport is not None:
            request.transport.close()
        return response  # written to a closed transport: nothing reaches the client
    await asyncio.sleep(switch.values["hold_ms"] / 1000)
    return response


@web.middleware
async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(REST_PREFIXES):
        return await handler(request)
    sandbox = request.app[SANDBOX]
    faults = sandbox.faults
    # Decided on arrival, in arrival order: a delayed request does not take a fault set while it waits.
    delay = faults.take("delay", request)
    throttle = faults.take("rate_limit", request)
    failure = None if throttle is not None else faults.take("error", request)
    if delay is not None:
        faults.record_request("delay", request, None, ms=delay.values["ms"])
        await asyncio.sleep(delay.values["ms"] / 1000)
    if throttle is not None:
        faults.record_request("rate_limit", request, 429)
        return throttled_response(sandbox, throttle)
    if failure is not None:
        faults.record_request("error", request, failure.values["status"])
        return failure_response(failure)
    response = await handler(request)
    if faults.clock_offset_ms and response.status == 400 and (body_json(response) or {}).get("code") == -1021:
        faults.record_request("clock_offset", request, 400, offset_ms=faults.clock_offset_ms)
    if (request.path, request.method) in ACCEPTED_REQUESTS.values() and response.status == 200:
        return await answer_after_accept(request, faults, response)
    return response


def _kind(conn: Connection) -> str:
    return "market" if conn.market else "user"


async def drop_websockets(sandbox: Sandbox, drop: WsDrop) -> int:
    """Close every open websocket of `drop.kind` (and refuse new ones for `drop.refuse_s`); how many closed."""
    sandbox.faults.refuse_websockets(drop)
    doomed = [c for c in list(sandbox.hub.connections) if drop.kind in ("all", _kind(c))]
    closes = []
    for conn in doomed:
        sandbox.faults.record("websockets_dropped", "GET", _kind(conn), None, None, abrupt=drop.abrupt)
        if drop.abrupt:
            conn.abort()
        else:
            closes.append(conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"sandbox fault: websocket dropped"))
    if closes:
        # A peer that never answers the close frame must not hold the admin request.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*closes, return_exceptions=True), WS_CLOSE_TIMEOUT_S)
    return len(doomed)
