"""Test control under `/_sandbox/`: keys, balances, prices, rate limits, countdowns, counters.

The fault switches have their own routes under `/_sandbox/faults` (apps.sandbox.fault_routes).

Loopback peers only, whatever address the server listens on: these routes mint keys and
money, so they must never be reachable from another machine. `apps.sandbox.admin` is the
client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from apps.sandbox import render
from apps.sandbox.context import SANDBOX, Sandbox
from apps.sandbox.decimals import fmt
from apps.sandbox.state import Account, KeySpec, Permissions, new_key_material, valid_key_format
from apps.sandbox.symbols import SYMBOLS

PREFIX = "/_sandbox"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_loopback(peer: str | None) -> bool:
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


@web.middleware
async def admin_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(PREFIX + "/"):
        return await handler(request)
    if not is_loopback(request.remote):
        return web.json_response({"error": "the sandbox admin routes answer loopback peers only"}, status=403)
    try:
        return await handler(request)
    except AdminError as exc:
        return web.json_response({"error": exc.message}, status=exc.status)


def sandbox_of(request: web.Request) -> Sandbox:
    return request.app[SANDBOX]


async def body_of(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    try:
        data = await request.json()
    except ValueError as exc:
        raise AdminError(400, "the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise AdminError(400, "the body must be a JSON object")
    return data


def amount(asset: str, raw: Any) -> Decimal:
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise AdminError(400, f"balance of {asset} is not a number: {raw!r}") from exc
    if value < 0 or not value.is_finite():
        raise AdminError(400, f"balance of {asset} must be a non-negative number")
    return value


def account_of(request: web.Request) -> Account:
    api_key = request.match_info["api_key"]
    account = sandbox_of(request).state.accounts.get(api_key)
    if account is None:
        raise AdminError(404, f"no such key: {api_key}")
    return account


def symbol_of(request: web.Request) -> str:
    symbol = request.match_info["symbol"].upper().replace("/", "")
    if symbol not in SYMBOLS:
        raise AdminError(404, f"no such symbol: {symbol}")
    return symbol


def permissions_view(p: Permissions) -> dict[str, Any]:
    return {
        "can_read": p.can_read,
        "can_trade": p.can_trade,
        "can_withdraw": p.can_withdraw,
        "ip_restrict": p.ip_restrict,
        "allowed_ips": list(p.allowed_ips),
    }


def permissions_from(data: dict[str, Any], base: Permissions) -> Permissions:
    allowed = data.get("allowed_ips", list(base.allowed_ips))
    if not isinstance(allowed, list) or not all(isinstance(ip, str) for ip in allowed):
        raise AdminError(400, "allowed_ips must be a list of addresses")
    ip_restrict = bool(data.get("ip_restrict", base.ip_restrict))
    if ip_restrict and "allowed_ips" not in data and not base.ip_restrict:
        allowed = ["127.0.0.1", "::1"]
    return Permissions(
        can_read=bool(data.get("can_read", base.can_read)),
        can_trade=bool(data.get("can_trade", base.can_trade)),
        can_withdraw=bool(data.get("can_withdraw", base.can_withdraw)),
        ip_restrict=ip_restrict,
        allowed_ips=tuple(allowed),
    )


def balances_view(account: Account) -> dict[str, dict[str, str]]:
    return {asset: {"free": fmt(b.free), "locked": fmt(b.locked)} for asset, b in sorted(account.balances.items())}


def key_view(account: Account) -> dict[str, Any]:
    return {
        "api_key": account.api_key,
        "permissions": permissions_view(account.permissions),
        "balances": balances_view(account),
        "rate_limit": account.rate_limit,
        "created_ms": account.created_ms,
    }


def price_view(sandbox: Sandbox, symbol: str) -> dict[str, Any]:
    market = sandbox.feed.market(symbol)
    bid, ask = market.best()
    return {
        "symbol": symbol,
        "price": fmt(market.price),
        "bid": fmt(bid),
        "ask": fmt(ask),
        "held": market.held,
        "update_id": market.update_id,
    }


# -- handlers --------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    return web.json_response(
        {"ok": True, "server_time": sandbox.server_now(), "seed": sandbox.options.seed, "symbols": sorted(SYMBOLS)}
    )


async def reset(request: web.Request) -> web.Response:
    sandbox_of(request).reset()
    return web.json_response({"ok": True})


async def create_key(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await body_of(request)
    api_key = data.get("api_key") or new_key_material()
    secret = data.get("secret") or new_key_material()
    if not isinstance(api_key, str) or not valid_key_format(api_key):
        raise AdminError(400, "api_key must be 64 ASCII letters and digits, like a Binance key")
    if not isinstance(secret, str):
        raise AdminError(400, "secret must be a string")
    if api_key in sandbox.state.accounts:
        raise AdminError(409, "that api_key exists already")
    raw_balances = data.get("balances")
    if raw_balances is None:
        balances = KeySpec(api_key, secret).balances
    elif isinstance(raw_balances, dict):
        balances = tuple((str(asset), amount(str(asset), value)) for asset, value in raw_balances.items())
    else:
        raise AdminError(400, "balances must be an object of asset: amount")
    spec = KeySpec(api_key, secret, permissions_from(data, Permissions()), balances)
    account = sandbox.state.add_account(spec, sandbox.now())
    if data.get("rate_limit") is not None:
        account.rate_limit = int(data["rate_limit"])
    # The secret is returned once, to the caller that asked for it; it is never logged.
    return web.json_response({**key_view(account), "secret": secret}, status=201)


async def get_key(request: web.Request) -> web.Response:
    return web.json_response(key_view(account_of(request)))


async def set_permissions(request: web.Request) -> web.Response:
    account = account_of(request)
    account.permissions = permissions_from(await body_of(request), account.permissions)
    return web.json_response(key_view(account))


async def get_balances(request: web.Request) -> web.Response:
    return web.json_response(balances_view(account_of(request)))


async def set_balances(request: web.Request) -> web.Response:
    account = account_of(request)
    for asset, value in (await body_of(request)).items():
        account.balance(str(asset)).free = amount(str(asset), value)
    sandbox_of(request).hub.balances_changed(account, [str(a) for a in account.balances])
    return web.json_response(balances_view(account))


async def list_orders(request: web.Request) -> web.Response:
    account = account_of(request)
    status = request.query.get("status", "all")
    if status not in ("open", "all"):
        raise AdminError(400, "status must be open or all")
    symbol = request.query.get("symbol")
    orders = [
        o
        for o in sorted(account.orders.values(), key=lambda o: o.order_id)
        if (status == "all" or o.status.is_open) and (symbol is None or o.symbol == symbol)
    ]
    return web.json_response([render.order(o) for o in orders])


async def countdowns(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    account = account_of(request)
    now = sandbox.now()
    rows = [
        {
            "symbol": c.symbol,
            "countdown_ms": c.countdown_ms,
            "active": c.active,
            "deadline_ms": c.deadline_ms,
            "remaining_ms": max(0, c.deadline_ms - now) if c.active else None,
            "triggered": c.triggered,
            "last_triggered_ms": c.last_triggered_ms,
        }
        for c in sandbox.state.countdowns.values()
        if c.api_key == account.api_key
    ]
    return web.json_response(rows)


async def get_price(request: web.Request) -> web.Response:
    return web.json_response(price_view(sandbox_of(request), symbol_of(request)))


async def set_price(request: web.Request) -> web.Response:
    """Move a price now and run one matching pass at it.

    With hold (the default) the random walk leaves the symbol alone and no further fills happen
    from price moves until the next set_price or release: a test decides each step.
    """
    sandbox = sandbox_of(request)
    symbol = symbol_of(request)
    data = await body_of(request)
    if "price" not in data:
        raise AdminError(400, "price is required")
    price = amount("price", data["price"])
    if price <= 0:
        raise AdminError(400, "price must be positive")
    market = sandbox.feed.market(symbol)
    market.held = bool(data.get("hold", True))
    market.set_price(price)
    fills = sandbox.engine.match_resting(symbol)
    sandbox.hub.market_moved(symbol)
    return web.json_response({**price_view(sandbox, symbol), "fills": fills})


async def release_price(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    symbol = symbol_of(request)
    sandbox.feed.market(symbol).held = False
    return web.json_response(price_view(sandbox, symbol))


async def set_rate_limit(request: web.Request) -> web.Response:
    sandbox = sandbox_of(request)
    data = await body_of(request)
    try:
        per_minute = int(data["requests_per_minute"])
    except (KeyError, TypeError, ValueError) as exc:
        raise AdminError(400, "requests_per_minute (an integer) is required") from exc
    if per_minute < 1:
        raise AdminError(400, "requests_per_minute must be at least 1")
    api_key = data.get("api_key")
    if api_key is None:
        sandbox.state.default_rate_limit = per_minute
    else:
        account = sandbox.state.accounts.get(str(api_key))
        if account is None:
            raise AdminError(404, f"no such key: {api_key}")
        account.rate_limit = per_minute
    return web.json_response({"requests_per_minute": per_minute, "api_key": api_key})


async def order_count(request: web.Request) -> web.Response:
    state = sandbox_of(request).state
    return web.json_response(
        {
            "total": sum(state.orders_received.values()),
            "by_key": dict(state.orders_received),
            "accepted_by_key": dict(state.orders_accepted),
            "test_total": sum(state.test_orders_received.values()),
            "test_by_key": dict(state.test_orders_received),
        }
    )


def setup(app: web.Application) -> None:
    keys = f"{PREFIX}/keys/{{api_key}}"
    app.router.add_get(f"{PREFIX}/health", health)
    app.router.add_post(f"{PREFIX}/reset", reset)
    app.router.add_post(f"{PREFIX}/keys", create_key)
    app.router.add_get(keys, get_key)
    app.router.add_post(f"{keys}/permissions", set_permissions)
    app.router.add_get(f"{keys}/balances", get_balances)
    app.router.add_post(f"{keys}/balances", set_balances)
    app.router.add_get(f"{keys}/orders", list_orders)
    app.router.add_get(f"{keys}/countdown", countdowns)
    app.router.add_get(f"{PREFIX}/prices/{{symbol}}", get_price)
    app.router.add_post(f"{PREFIX}/prices/{{symbol}}", set_price)
    app.router.add_post(f"{PREFIX}/prices/{{symbol}}/release", release_price)
    app.router.add_post(f"{PREFIX}/rate-limit", set_rate_limit)
    app.router.add_get(f"{PREFIX}/order-count", order_count)
