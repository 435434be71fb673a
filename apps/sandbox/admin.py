"""A small synchronous client for the sandbox's `/_sandbox/` test-control routes (dev/test only).

    admin = SandboxAdmin("http://127.0.0.1:8765")
    key = admin.create_key(can_trade=False)
    admin.set_price("BTC/USDT", "59000")
    assert admin.order_count().total == 0

Fault switches (each one is described in apps.sandbox.faults; all off until set):

    admin.delay_requests(1500, path_prefix="/api/v3/order")     # every order request handled 1.5 s late
    admin.fail_requests(status=503, count=3)                     # the next 3 REST requests answer 503
    admin.timeout_after_accept(count=1, hold_ms=20_000)          # next order placed, its answer held 20 s
    admin.rate_limit_burst(seconds=5, api_key=key.api_key)       # 429 + Retry-After for 5 s, one key only
    admin.drop_websockets("user", refuse_s=3)                    # user-data websockets closed, refused 3 s
    admin.set_clock_offset(-2000)                                # the exchange's clock 2 s behind
    assert admin.faults().count("error") == 3
    admin.clear_faults()                                         # all off (counts stay until reset())

Standard library only, and it ignores proxy variables: the sandbox is always on loopback.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypedDict, Unpack
from urllib.parse import quote, urlencode


class SandboxAdminError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"sandbox admin answered {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class KeyPermissions:
    can_read: bool
    can_trade: bool
    can_withdraw: bool
    ip_restrict: bool
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True)
class BalanceView:
    free: Decimal
    locked: Decimal


@dataclass(frozen=True)
class SandboxKey:
    api_key: str
    secret: str
    permissions: KeyPermissions
    balances: dict[str, BalanceView]

    def __repr__(self) -> str:  # keep the secret out of test output and logs
        return f"SandboxKey(api_key={self.api_key!r}, secret='***', permissions={self.permissions!r})"


@dataclass(frozen=True)
class PriceState:
    symbol: str
    price: Decimal
    bid: Decimal
    ask: Decimal
    held: bool
    update_id: int
    fills: int = 0  # fills made by the matching pass of set_price


@dataclass(frozen=True)
class CountdownState:
    symbol: str | None
    countdown_ms: int
    active: bool
    deadline_ms: int
    remaining_ms: int | None
    triggered: int
    last_triggered_ms: int | None


@dataclass(frozen=True)
class OrderCount:
    total: int
    by_key: dict[str, int]
    accepted_by_key: dict[str, int]
    test_total: int
    test_by_key: dict[str, int]

    def for_key(self, api_key: str) -> int:
        return self.by_key.get(api_key, 0)


class Scope(TypedDict, total=False):
    """Which REST requests a fault applies to, and for how long (apps.sandbox.faults)."""

    path_prefix: str
    method: str
    api_key: str
    count: int
    seconds: float
    fraction: float


@dataclass(frozen=True)
class FaultsView:
    active: dict[str, dict[str, Any]]  # the switches on now, with their settings and what is left
    counts: dict[str, int]  # answers each fault changed since the last reset
    log: list[dict[str, Any]]  # the last 1,000 faulted requests, oldest first
    dropped: int | None = None  # websockets closed, for drop_websockets

    def count(self, fault: str) -> int:
        return self.counts.get(fault, 0)

    def logged(self, fault: str) -> list[dict[str, Any]]:
        return [entry for entry in self.log if entry["fault"] == fault]


def market_id(symbol: str) -> str:
    """Accepts "BTC/USDT" or "BTCUSDT"."""
    return symbol.replace("/", "").upper()


def _balances(raw: dict[str, Any]) -> dict[str, BalanceView]:
    return {asset: BalanceView(Decimal(v["free"]), Decimal(v["locked"])) for asset, v in raw.items()}


def _permissions(raw: dict[str, Any]) -> KeyPermissions:
    return KeyPermissions(
        can_read=raw["can_read"],
        can_trade=raw["can_trade"],
        can_withdraw=raw["can_withdraw"],
        ip_restrict=raw["ip_restrict"],
        allowed_ips=tuple(raw["allowed_ips"]),
    )


def _price(raw: dict[str, Any]) -> PriceState:
    return PriceState(
        symbol=raw["symbol"],
        price=Decimal(raw["price"]),
        bid=Decimal(raw["bid"]),
        ask=Decimal(raw["ask"]),
        held=raw["held"],
        update_id=raw["update_id"],
        fills=raw.get("fills", 0),
    )


class SandboxAdmin:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - base_url is the sandbox's http URL
            f"{self.base_url}/_sandbox{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                message = exc.reason
            raise SandboxAdminError(exc.code, str(message)) from None

    # -- lifecycle ------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
        return result

    def reset(self) -> None:
        """Everything back to how the process started: only the command-line key, fresh prices."""
        self._call("POST", "/reset")

    # -- keys and balances ----------------------------------------------------------------

    def create_key(
        self,
        *,
        can_read: bool = True,
        can_trade: bool = True,
        can_withdraw: bool = False,
        ip_restrict: bool = False,
        allowed_ips: list[str] | None = None,
        balances: dict[str, Decimal | str | int] | None = None,
        api_key: str | None = None,
        secret: str | None = None,
        rate_limit: int | None = None,
    ) -> SandboxKey:
        """A new key (generated unless given); balances default to 10,000 USDT and 1 BTC."""
        body: dict[str, Any] = {
            "can_read": can_read,
            "can_trade": can_trade,
            "can_withdraw": can_withdraw,
            "ip_restrict": ip_restrict,
        }
        if allowed_ips is not None:
            body["allowed_ips"] = allowed_ips
        if balances is not None:
            body["balances"] = {asset: str(amount) for asset, amount in balances.items()}
        if api_key is not None:
            body["api_key"] = api_key
        if secret is not None:
            body["secret"] = secret
        if rate_limit is not None:
            body["rate_limit"] = rate_limit
        raw = self._call("POST", "/keys", body)
        return SandboxKey(raw["api_key"], raw["secret"], _permissions(raw["permissions"]), _balances(raw["balances"]))

    def permissions(self, api_key: str) -> KeyPermissions:
        return _permissions(self._call("GET", f"/keys/{quote(api_key)}")["permissions"])

    def set_permissions(self, api_key: str, **changes: bool | list[str]) -> KeyPermissions:
        """Change some of can_read, can_trade, can_withdraw, ip_restrict, allowed_ips."""
        return _permissions(self._call("POST", f"/keys/{quote(api_key)}/permissions", dict(changes))["permissions"])

    def balances(self, api_key: str) -> dict[str, BalanceView]:
        return _balances(self._call("GET", f"/keys/{quote(api_key)}/balances"))

    def set_balances(self, api_key: str, balances: dict[str, Decimal | str | int]) -> dict[str, BalanceView]:
        """Set the free amount of each asset given (locked amounts are left alone)."""
        body = {asset: str(amount) for asset, amount in balances.items()}
        return _balances(self._call("POST", f"/keys/{quote(api_key)}/balances", body))

    # -- orders, countdown, counters ------------------------------------------------------

    def orders(self, api_key: str, *, open_only: bool = False, symbol: str | None = None) -> list[dict[str, Any]]:
        """The key's orders in Binance's GET /api/v3/order shape, oldest first."""
        query: dict[str, str] = {"status": "open" if open_only else "all"}
        if symbol is not None:
            query["symbol"] = market_id(symbol)
        result: list[dict[str, Any]] = self._call("GET", f"/keys/{quote(api_key)}/orders?{urlencode(query)}")
        return result

    def open_orders(self, api_key: str, symbol: str | None = None) -> list[dict[str, Any]]:
        return self.orders(api_key, open_only=True, symbol=symbol)

    def countdown(self, api_key: str) -> list[CountdownState]:
        return [CountdownState(**row) for row in self._call("GET", f"/keys/{quote(api_key)}/countdown")]

    def order_count(self) -> OrderCount:
        """Order requests (POST /api/v3/order) the exchange received, refused ones included."""
        return OrderCount(**self._call("GET", "/order-count"))

    def set_rate_limit(self, requests_per_minute: int, api_key: str | None = None) -> None:
        """For one key, or (api_key=None) the default of every key and of unauthenticated callers."""
        self._call("POST", "/rate-limit", {"requests_per_minute": requests_per_minute, "api_key": api_key})

    # -- prices ---------------------------------------------------------------------------

    def price(self, symbol: str) -> PriceState:
        return _price(self._call("GET", f"/prices/{market_id(symbol)}"))

    def set_price(self, symbol: str, price: Decimal | str | int, *, hold: bool = True) -> PriceState:
        """Move the price now and run one matching pass; with hold the walk leaves the symbol alone."""
        return _price(self._call("POST", f"/prices/{market_id(symbol)}", {"price": str(price), "hold": hold}))

    def release_price(self, symbol: str) -> PriceState:
        """Let the random walk move the symbol again."""
        return _price(self._call("POST", f"/prices/{market_id(symbol)}/release"))

    # -- faults (each described in apps.sandbox.faults) -----------------------------------

    def faults(self) -> FaultsView:
        return FaultsView(**self._call("GET", "/faults"))

    def set_fault(self, name: str, **settings: Any) -> FaultsView:
        """Set fault `name` (replacing its settings); settings given as None are left out."""
        body = {key: value for key, value in settings.items() if value is not None}
        return FaultsView(**self._call("POST", f"/faults/{quote(name)}", body))

    def clear_faults(self, name: str | None = None) -> FaultsView:
        """Turn one fault off, or all of them; the counts and the log stay until reset()."""
        return FaultsView(**self._call("DELETE", "/faults" if name is None else f"/faults/{quote(name)}"))

    def delay_requests(self, ms: int, **scope: Unpack[Scope]) -> FaultsView:
        """Handle every matching REST request `ms` late (until cleared, or for count/seconds)."""
        return self.set_fault("delay", ms=ms, **scope)

    def fail_requests(self, status: int = 503, *, body: str | None = None, **scope: Unpack[Scope]) -> FaultsView:
        """Answer matching REST requests with `status` (500/502/503) without handling them; needs count,
        seconds or fraction. body "json" (Binance's, the default but for 502) or "html" (a gateway's page)."""
        return self.set_fault("error", status=status, body=body, **scope)

    def timeout_after_accept(
        self,
        count: int = 1,
        *,
        hold_ms: int = 30_000,
        drop: bool = False,
        api_key: str | None = None,
        on: str = "order",
    ) -> FaultsView:
        """Place the next `count` accepted orders (on="cancel_all": carry out the next cancel-alls), then hold
        their answers `hold_ms` (or drop the connection)."""
        return self.set_fault("timeout_after_accept", count=count, hold_ms=hold_ms, drop=drop, api_key=api_key, on=on)

    def rate_limit_burst(self, *, retry_after_s: int | None = None, **scope: Unpack[Scope]) -> FaultsView:
        """Answer matching REST requests 429 (-1003, Retry-After); needs count, seconds or fraction."""
        return self.set_fault("rate_limit", retry_after_s=retry_after_s, **scope)

    def drop_websockets(self, kind: str = "all", *, refuse_s: int = 0, abrupt: bool = False) -> FaultsView:
        """Close the open websockets of `kind` ("all", "market", "user") now; refuse new ones `refuse_s`."""
        return self.set_fault("websockets", kind=kind, refuse_s=refuse_s, abrupt=abrupt)

    def set_clock_offset(self, ms: int) -> FaultsView:
        """Run the exchange's clock (timestamp checks, serverTime) `ms` ahead, or behind when negative."""
        return self.set_fault("clock_offset", ms=ms)
