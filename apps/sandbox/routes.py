"""Binance spot REST endpoints (`/api/v3/...`, a few `/sapi/v1/...`) served by the sandbox."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from apps.sandbox import errors, ratelimit, render
from apps.sandbox.context import SANDBOX, Sandbox
from apps.sandbox.decimals import fmt
from apps.sandbox.errors import BinanceError
from apps.sandbox.feed import INTERVAL_MINUTES, MINUTE_MS, Market
from apps.sandbox.orders import client_order_id, parse_new_order, required, symbol_spec
from apps.sandbox.signing import parse_params, verify_rest
from apps.sandbox.state import Account
from apps.sandbox.symbols import MAKER_RATE, SYMBOLS, TAKER_RATE, SymbolSpec, exchange_info

logger = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
INTEGER = "^[0-9]{1,20}$"


def reply(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=lambda d: json.dumps(d, separators=(",", ":")))


def sandbox_of(request: web.Request) -> Sandbox:
    return request.app[SANDBOX]


def public_params(request: web.Request) -> dict[str, str]:
    return parse_params(request.rel_url.raw_query_string, "")


async def signed(request: web.Request, permission: str | None) -> tuple[Account, dict[str, str]]:
    """Authenticate a SIGNED request; `permission` is "read", "trade" or None (any valid key)."""
    sandbox = sandbox_of(request)
    body = await request.text() if request.body_exists else ""
    account, params = verify_rest(
        sandbox.state,
        request.headers.get("X-MBX-APIKEY"),
        request.remote,
        request.rel_url.raw_query_string,
        body,
        sandbox.server_now(),
    )
    allowed = {"read": account.permissions.can_read, "trade": account.permissions.can_trade}.get(permission or "", True)
    if not allowed:
        raise errors.key_rejected()
    return account, params


def int_param(params: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    raw = params.get(name, "")
    if raw == "":
        return default
    if not raw.isdigit():
        raise errors.illegal_characters(name, INTEGER)
    return int(raw)


def symbols_param(params: Mapping[str, str]) -> list[SymbolSpec]:
    """`symbol=X`, `symbols=["X","Y"]` or neither (every symbol)."""
    if params.get("symbol"):
        return [symbol_spec(params)]
    raw = params.get("symbols")
    if not raw:
        return list(SYMBOLS.values())
    try:
        names = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise errors.illegal_characters(
            "symbols", '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
        ) from exc
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise errors.invalid_value("symbols")
    specs = [SYMBOLS.get(n) for n in names]
    if any(s is None for s in specs):
        raise errors.invalid_symbol()
    return [s for s in specs if s is not None]


def one_or_many(params: Mapping[str, str], render_one: Callable[[SymbolSpec], dict[str, Any]]) -> Any:
    specs = symbols_param(params)
    rows = [render_one(spec) for spec in specs]
    return rows[0] if params.get("symbol") else rows


def market_of(request: web.Request, params: Mapping[str, str]) -> Market:
    return sandbox_of(request).feed.market(symbol_spec(params).symbol)


# -- general and market data ----------------------------------------------------------------


async def ping(request: web.Request) -> web.Response:
    return reply({})


async def server_time(request: web.Request) -> web.Response:
    return reply({"serverTime": sandbox_of(request).server_now()})


async def system_status(request: web.Request) -> web.Response:
    return reply({"status": 0, "msg": "normal"})


async def get_exchange_info(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    specs = symbols_param(public_params(request))
    return reply(exchange_info(sandbox.server_now(), specs, sandbox.state.default_rate_limit))


async def depth(request: web.Request) -> web.Response:
    params = public_params(request)
    market = market_of(request, params)
    limit = min(int_param(params, "limit", 100) or 100, 5000)
    bids, asks = market.levels(limit)
    return reply({"lastUpdateId": market.update_id, "bids": render.levels(bids), "asks": render.levels(asks)})


async def recent_trades(request: web.Request) -> web.Response:
    params = public_params(request)
    market = market_of(request, params)
    limit = min(int_param(params, "limit", 500) or 500, 1000)
    return reply([render.public_trade(t) for t in list(market.trades)[-limit:]])


async def agg_trades(request: web.Request) -> web.Response:
    params = public_params(request)
    market = market_of(request, params)
    limit = min(int_param(params, "limit", 500) or 500, 1000)
    start, end, from_id = int_param(params, "startTime"), int_param(params, "endTime"), int_param(params, "fromId")
    trades = [
        t
        for t in market.trades
        if (start is None or t.time >= start)
        and (end is None or t.time <= end)
        and (from_id is None or t.trade_id >= from_id)
    ]
    trades = trades[:limit] if (start is not None or from_id is not None) else trades[-limit:]
    return reply([render.agg_trade(t) for t in trades])


async def klines(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    params = public_params(request)
    market = market_of(request, params)
    interval = required(params, "interval")
    if interval not in INTERVAL_MINUTES:
        raise errors.invalid_interval()
    limit = max(1, min(int_param(params, "limit", 500) or 500, 1000))
    candles = market.klines(
        interval, int_param(params, "startTime"), int_param(params, "endTime"), limit, sandbox.now()
    )
    bucket_ms = INTERVAL_MINUTES[interval] * MINUTE_MS
    return reply([render.kline(c, bucket_ms) for c in candles])


async def ticker_24hr(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    now = sandbox.now()
    data = one_or_many(public_params(request), lambda spec: render.ticker_24h(sandbox.feed.market(spec.symbol), now))
    return reply(data)


async def ticker_price(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)

    def row(spec: SymbolSpec) -> dict[str, Any]:
        return {"symbol": spec.symbol, "price": fmt(sandbox.feed.market(spec.symbol).last_price)}

    return reply(one_or_many(public_params(request), row))


async def book_ticker(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    return reply(one_or_many(public_params(request), lambda spec: render.book_ticker(sandbox.feed.market(spec.symbol))))


async def avg_price(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    market = market_of(request, public_params(request))
    return reply({"mins": 5, "price": fmt(market.last_price), "closeTime": sandbox.now()})


# -- account and trading ---------------------------------------------------------------------


async def account_info(request: web.Request) -> web.Response:
    account, params = await signed(request, "read")
    omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
    return reply(render.account(account, sandbox_of(request).now(), omit_zero))


async def api_restrictions(request: web.Request) -> web.Response:
    account, _ = await signed(request, None)
    return reply(render.api_restrictions(account))


async def trade_fee(request: web.Request) -> web.Response:
    _, params = await signed(request, "read")
    rows = [
        {"symbol": s.symbol, "makerCommission": str(MAKER_RATE), "takerCommission": str(TAKER_RATE)}
        for s in symbols_param(params)
    ]
    return reply(rows)


def count_order(request: web.Request, test: bool) -> None:
    """Every order request that reaches the exchange is counted, refused or not: tests assert on it."""
    state = sandbox_of(request).state
    counter = state.test_orders_received if test else state.orders_received
    counter[request.headers.get("X-MBX-APIKEY", "")] += 1


async def new_order(request: web.Request) -> web.Response:
    count_order(request, test=False)
    sandbox = sandbox_of(request)
    account, params = await signed(request, "trade")
    market = market_of(request, params)
    req = parse_new_order(params, market.price)
    order = sandbox.engine.place(account, req)
    return reply(render.new_order(order, req.response_type))


async def test_order(request: web.Request) -> web.Response:
    count_order(request, test=True)
    _, params = await signed(request, "trade")
    market = market_of(request, params)
    parse_new_order(params, market.price)
    return reply({})


def order_ref(params: Mapping[str, str]) -> tuple[int | None, str | None]:
    order_id = int_param(params, "orderId")
    orig_client_id = client_order_id(params, "origClientOrderId")
    if order_id is None and orig_client_id is None:
        raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
    return order_id, orig_client_id


async def query_order(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    account, params = await signed(request, "read")
    spec = symbol_spec(params)
    order_id, orig_client_id = order_ref(params)
    order = sandbox.engine.find(account, spec.symbol, order_id, orig_client_id)
    if order is None:
        raise errors.no_such_order()
    return reply(render.order(order))


async def cancel_order(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    account, params = await signed(request, "trade")
    spec = symbol_spec(params)
    order_id, orig_client_id = order_ref(params)
    new_id = client_order_id(params, "newClientOrderId")
    order, cancel_id = sandbox.engine.cancel(account, spec.symbol, order_id, orig_client_id, new_id)
    return reply(render.canceled(order, cancel_id))


async def open_orders(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    account, params = await signed(request, "read")
    symbol = symbol_spec(params).symbol if params.get("symbol") else None
    orders = sorted(sandbox.state.open_orders_of(account.api_key, symbol), key=lambda o: o.order_id)
    return reply([render.order(o) for o in orders])


async def cancel_open_orders(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    account, params = await signed(request, "trade")
    spec = symbol_spec(params)
    canceled = sandbox.engine.cancel_all(account, spec.symbol)
    if not canceled:
        raise errors.unknown_order()  # what Binance answers when there was nothing to cancel
    return reply([render.canceled(order, cancel_id) for order, cancel_id in canceled])


async def all_orders(request: web.Request) -> web.Response:
    account, params = await signed(request, "read")
    spec = symbol_spec(params)
    from_id, start, end = int_param(params, "orderId"), int_param(params, "startTime"), int_param(params, "endTime")
    limit = min(int_param(params, "limit", 500) or 500, 1000)
    orders = [
        o
        for o in sorted(account.orders.values(), key=lambda o: o.order_id)
        if o.symbol == spec.symbol
        and (from_id is None or o.order_id >= from_id)
        and (start is None or o.time >= start)
        and (end is None or o.time <= end)
    ]
    orders = orders[:limit] if from_id is not None else orders[-limit:]
    return reply([render.order(o) for o in orders])


async def my_trades(request: web.Request) -> web.Response:
    account, params = await signed(request, "read")
    spec = symbol_spec(params)
    order_id, from_id = int_param(params, "orderId"), int_param(params, "fromId")
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    limit = min(int_param(params, "limit", 500) or 500, 1000)
    trades = [
        t
        for t in account.trades
        if t.symbol == spec.symbol
        and (order_id is None or t.order_id == order_id)
        and (from_id is None or t.trade_id >= from_id)
        and (start is None or t.time >= start)
        and (end is None or t.time <= end)
    ]
    trades = trades[:limit] if (from_id is not None or start is not None) else trades[-limit:]
    return reply([render.my_trade(t) for t in trades])


async def countdown_cancel_all(request: web.Request) -> web.Response:
    """The dead-man's switch. Binance has it on futures only; the sandbox offers it on spot.

    Answers like Binance futures: {"symbol": "...", "countdownTime": "..."}. Without `symbol`
    it covers every symbol of the account (Binance futures requires one).
    """
    sandbox = sandbox_of(request)
    account, params = await signed(request, "trade")
    symbol = symbol_spec(params).symbol if params.get("symbol") else None
    countdown = int_param(params, "countdownTime")
    if countdown is None:
        raise errors.mandatory("countdownTime")
    sandbox.engine.set_countdown(account, symbol, countdown)
    return reply({"symbol": symbol, "countdownTime": str(countdown)})


# -- plumbing --------------------------------------------------------------------------------


@web.middleware
async def binance_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Binance's JSON errors for the API paths.

    An endpoint the sandbox lacks answers -1020 (ccxt: BadRequest, not retried) naming it, so a
    missing feature is obvious rather than looking like a network problem.
    """
    if request.path.startswith("/_sandbox/"):
        return await handler(request)  # test control: admin_guard answers its errors
    try:
        return await handler(request)
    except BinanceError as exc:
        return reply(exc.body(), status=exc.status, headers=exc.headers)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        missing = errors.unsupported_operation(
            f"the sandbox exchange does not implement {request.method} {request.path}"
        )
        return reply(missing.body(), status=exc.status)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("%s %s failed", request.method, request.path)
        return reply(errors.unknown_error("An unknown error occurred while processing the request.").body(), 500)


@web.middleware
async def rate_limited(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(("/api/", "/sapi/")):
        return await handler(request)
    sandbox = sandbox_of(request)
    api_key = request.headers.get("X-MBX-APIKEY", "")
    account = sandbox.state.accounts.get(api_key) if api_key else None
    bucket = api_key if api_key else f"ip:{request.remote}"
    limit = account.rate_limit if account is not None and account.rate_limit is not None else None
    used = ratelimit.admit(sandbox.state, bucket, limit or sandbox.state.default_rate_limit, sandbox.now())
    try:
        response = await handler(request)
    except BinanceError as exc:
        exc.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        raise
    response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
    return response


def setup(app: web.Application) -> None:
    v3 = "/api/v3"
    app.router.add_get(f"{v3}/ping", ping)
    app.router.add_get(f"{v3}/time", server_time)
    app.router.add_get(f"{v3}/exchangeInfo", get_exchange_info)
    app.router.add_get(f"{v3}/depth", depth)
    app.router.add_get(f"{v3}/trades", recent_trades)
    app.router.add_get(f"{v3}/aggTrades", agg_trades)
    app.router.add_get(f"{v3}/klines", klines)
    app.router.add_get(f"{v3}/uiKlines", klines)
    app.router.add_get(f"{v3}/ticker/24hr", ticker_24hr)
    app.router.add_get(f"{v3}/ticker/price", ticker_price)
    app.router.add_get(f"{v3}/ticker/bookTicker", book_ticker)
    app.router.add_get(f"{v3}/avgPrice", avg_price)
    app.router.add_get(f"{v3}/account", account_info)
    app.router.add_post(f"{v3}/order", new_order)
    app.router.add_post(f"{v3}/order/test", test_order)
    app.router.add_get(f"{v3}/order", query_order)
    app.router.add_delete(f"{v3}/order", cancel_order)
    app.router.add_get(f"{v3}/openOrders", open_orders)
    app.router.add_delete(f"{v3}/openOrders", cancel_open_orders)
    app.router.add_get(f"{v3}/allOrders", all_orders)
    app.router.add_get(f"{v3}/myTrades", my_trades)
    app.router.add_post(f"{v3}/countdownCancelAll", countdown_cancel_all)
    app.router.add_get("/sapi/v1/account/apiRestrictions", api_restrictions)
    app.router.add_get("/sapi/v1/asset/tradeFee", trade_fee)
    app.router.add_get("/sapi/v1/system/status", system_status)
