"""Fault switches of the sandbox exchange (dev/test only): slow, failing, throttled and skewed answers on demand.

Every switch is OFF until a test sets it, through `POST /_sandbox/faults/<name>` with a JSON object of
settings (client: `SandboxAdmin.set_fault(name, **settings)` and the helpers beside it in
apps.sandbox.admin). Setting a switch replaces its previous settings. A switch stays until it is cleared
(`DELETE /_sandbox/faults/<name>`, or `DELETE /_sandbox/faults` for all), or until its own budget runs out
(`count` matching requests, or `seconds`). `/_sandbox/reset` clears every switch and the counters. A bad
setting is answered 400 with the reason, and nothing changes. `GET /_sandbox/faults` shows the switches,
`counts` (how many answers each switch changed, kept when switches are cleared) and `log` (the last 1,000
faulted requests: fault, method, path, key, status, and for timeout_after_accept the order's ids).

Settings shared by the REST switches (every one optional):
    path_prefix   only paths starting with it, e.g. "/api/v3/order" (REST paths only: /api/, /sapi/, /fapi/,
                  /dapi/...; never /_sandbox/ or the websockets)
    method        only GET, POST, PUT or DELETE
    api_key       only requests carrying this X-MBX-APIKEY (the session's sandbox is shared by every test)
    count         the next `count` matching requests, then the switch turns itself off
    seconds       until `seconds` from now, then off
    fraction      each matching request with this probability (0 < fraction <= 1), drawn from a generator
                  seeded with the sandbox's seed; with count, count is the number of faulted answers

The switches (what ccxt 4.5.90's binance raises is what a client sees):

delay {ms: 1..120000}
    Every matching REST request waits `ms` before it is handled (the action happens late too: a client
    that times out first may still find its order placed). Without count/seconds it stays on. ccxt raises
    RequestTimeout when `ms` exceeds its timeout. Counted as "delay".
error {status: 500|502|503, body: "json"|"html"; count|seconds|fraction required}
    Matching requests are answered with `status` WITHOUT being handled (no order placed, nothing
    counted by the exchange). body "json" is Binance's own: 500 {"code":-1000,...} and 502 {"code":-1001,...}
    (ccxt: OperationFailed), 503 {"code":-1008,...} (ccxt: ExchangeError) -- none of them a ccxt
    NetworkError, so not retried as one. body "html" is a gateway's error page, which ccxt maps by status
    to ExchangeNotAvailable (a NetworkError). Default body: "html" for 502, else "json". Counted as "error".
timeout_after_accept {hold_ms: 1..300000 (default 30000), drop: bool, on: "order"|"cancel_all" (default "order");
                      count|seconds|fraction required}
    For POST /api/v3/order only (api_key may narrow it), or with on "cancel_all" for DELETE /api/v3/openOrders
    only (the orders are cancelled as usual, then the answer is held or dropped): the order is placed as usual
    (it rests or fills, the user-data stream reports it) and then the answer is held `hold_ms` (ccxt:
    RequestTimeout once its own timeout passes), or with drop the connection is closed without an answer
    (sync ccxt: NetworkError, async ccxt: ExchangeNotAvailable). Only accepted placements are faulted: a
    refused order is answered normally and does not use the budget. A retry with the same newClientOrderId
    is refused -2010 "Duplicate order sent." (ccxt InvalidOrder) and GET /api/v3/order?origClientOrderId=...
    finds the order: that is how a client adopts it. Counted as "timeout_after_accept"; the log names the
    order.
rate_limit {retry_after_s: 1..3600 (default: the seconds left, else 1); count|seconds|fraction required}
    Matching requests are answered 429 with Retry-After and Binance's -1003 body, without being handled
    (ccxt raises DDoSProtection, the parent of RateLimitExceeded). Counted as "rate_limit".
websockets {kind: "all"|"market"|"user" (default "all"), refuse_s: 0..3600 (default 0), abrupt: bool}
    An action and a switch: every open websocket of `kind` ("market": /ws and /stream; "user": the
    WebSocket API /ws-api/v3, which carries user data) is closed now -- with a close frame (1001, going
    away), or with abrupt by cutting the connection (the client sees 1006). With refuse_s, new websockets of
    that kind are refused with HTTP 503 for that long (the switch; DELETE lifts it early). Counted as
    "websockets_dropped" and "websockets_refused".
clock_offset {ms: -86400000..86400000}
    The exchange's clock for signed requests' timestamp/recvWindow checks (REST and WebSocket API) and
    for serverTime (GET /api/v3/time, exchangeInfo, the WebSocket API's time, /_sandbox/health) runs `ms`
    ahead (negative: behind). A client with a correct clock then gets -1021 (ccxt InvalidNonce) once its
    timestamps leave the window (ms <= -1000: "ahead of the server's time"; ms > recvWindow: "outside of the
    recvWindow"), until it syncs its time difference from GET /api/v3/time. Times the exchange reports in
    orders, trades and streams keep the true clock. REST -1021 answers given while an offset is set are
    counted as "clock_offset".
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from apps.sandbox.fault_settings import FaultError, Settings
from apps.sandbox.state import valid_key_format

REST_PREFIXES = ("/api/", "/sapi/", "/fapi/", "/dapi/", "/eapi/", "/papi/")
ORDER_PATH = "/api/v3/order"
OPEN_ORDERS_PATH = "/api/v3/openOrders"
# What timeout_after_accept answers late (its "on"): an order placement or a cancel-all, by path and method.
ACCEPTED_REQUESTS = {"order": (ORDER_PATH, "POST"), "cancel_all": (OPEN_ORDERS_PATH, "DELETE")}
METHODS = ("GET", "POST", "PUT", "DELETE")
ERROR_STATUSES = (500, 502, 503)
WS_KINDS = ("all", "market", "user")
MAX_DELAY_MS = 120_000
MAX_HOLD_MS = 300_000
DEFAULT_HOLD_MS = 30_000
MAX_SECONDS = 3600
MAX_COUNT = 1_000_000
MAX_CLOCK_OFFSET_MS = 86_400_000
LOG_KEPT = 1000
MATCH_KEYS = ("path_prefix", "method", "api_key")
BUDGET_KEYS = ("count", "seconds", "fraction")


@dataclass(frozen=True)
class Match:
    """Which REST requests a switch applies to."""

    path_prefix: str | None = None
    method: str | None = None
    api_key: str | None = None

    @classmethod
    def parse(cls, s: Settings) -> Match:
        return cls(
            path_prefix=s.text(
                "path_prefix", lambda p: p.startswith("/") and len(p) <= 200, "a path starting with '/'"
            ),
            method=s.choice("method", (*METHODS, None), None),
            api_key=s.text("api_key", valid_key_format, "a 64-character API key"),
        )

    def covers(self, request: web.Request) -> bool:
        return (
            (self.path_prefix is None or request.path.startswith(self.path_prefix))
            and (self.method is None or request.method == self.method)
            and (self.api_key is None or request.headers.get("X-MBX-APIKEY") == self.api_key)
        )


@dataclass
class Budget:
    """How long a switch lasts: `count` more faulted answers, until a monotonic deadline, at some rate."""

    count: int | None = None
    until: float | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, s: Settings, required: bool) -> Budget:
        count = s.integer("count", 1, MAX_COUNT)
        seconds = s.number("seconds", 0, MAX_SECONDS)
        fraction = s.number("fraction", 0, 1)
        if required and count is None and seconds is None and fraction is None:
            raise FaultError(f"{s.name} needs count, seconds or fraction (how many answers to change)")
        return cls(count, None if seconds is None else time.monotonic() + seconds, fraction)

    def spent(self) -> bool:
        return (self.count is not None and self.count <= 0) or (
            self.until is not None and time.monotonic() >= self.until
        )

    def take(self, rng: random.Random) -> bool:
        """Whether this request is faulted; uses one of `count`."""
        if self.spent() or (self.fraction is not None and rng.random() >= self.fraction):
            return False
        if self.count is not None:
            self.count -= 1
        return True

    def seconds_left(self) -> float | None:
        return None if self.until is None else max(0.0, self.until - time.monotonic())

    def view(self) -> dict[str, Any]:
        left = self.seconds_left()
        return {
            "count": self.count,
            "seconds_left": None if left is None else round(left, 3),
            "fraction": self.fraction,
        }


@dataclass
class Switch:
    """A REST switch: where it applies, how long, and its own values (`ms`, `status`, `hold_ms`...)."""

    name: str
    match: Match
    budget: Budget
    values: dict[str, Any]

    def view(self) -> dict[str, Any]:
        return {**self.values, **{k: v for k, v in vars(self.match).items() if v is not None}, **self.budget.view()}


def _delay(s: Settings) -> dict[str, Any]:
    return {"ms": s.required_integer("ms", 1, MAX_DELAY_MS)}


def _error(s: Settings) -> dict[str, Any]:
    status = s.choice("status", ERROR_STATUSES, 503)
    return {"status": status, "body": s.choice("body", ("json", "html"), "html" if status == 502 else "json")}


def _timeout_after_accept(s: Settings) -> dict[str, Any]:
    return {
        "hold_ms": s.integer("hold_ms", 1, MAX_HOLD_MS, DEFAULT_HOLD_MS),
        "drop": s.boolean("drop"),
        "on": s.choice("on", ACCEPTED_REQUESTS, "order"),
    }


def _rate_limit(s: Settings) -> dict[str, Any]:
    return {"retry_after_s": s.integer("retry_after_s", 1, MAX_SECONDS)}


# name -> (its own settings, parser of them, whether it needs a budget, whether it takes a Match)
REST_SWITCHES: dict[str, tuple[tuple[str, ...], Callable[[Settings], dict[str, Any]], bool, bool]] = {
    "delay": (("ms",), _delay, False, True),
    "error": (("status", "body"), _error, True, True),
    "timeout_after_accept": (("hold_ms", "drop", "on"), _timeout_after_accept, True, False),
    "rate_limit": (("retry_after_s",), _rate_limit, True, True),
}
NAMES = (*REST_SWITCHES, "websockets", "clock_offset")


@dataclass(frozen=True)
class WsDrop:
    """The websockets action: close the open ones of `kind` now, refuse new ones for `refuse_s`."""

    kind: str
    refuse_s: int
    abrupt: bool

    @classmethod
    def parse(cls, data: dict[str, Any]) -> WsDrop:
        s = Settings("websockets", data, ("kind", "refuse_s", "abrupt"))
        return cls(
            s.choice("kind", WS_KINDS, "all"), s.integer("refuse_s", 0, MAX_SECONDS, 0) or 0, s.boolean("abrupt")
        )


@dataclass
class WsRefusal:
    kind: str
    until: float

    def refuses(self, kind: str) -> bool:
        return time.monotonic() < self.until and self.kind in ("all", kind)


class Faults:
    """The switches, their counters and log. One asyncio loop: no locks."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - chance of a test fault, not security
        self.switches: dict[str, Switch] = {}
        self.ws_refusal: WsRefusal | None = None
        self.clock_offset_ms = 0
        self.counts: Counter[str] = Counter()
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_KEPT)

    # -- setting and clearing -------------------------------------------------------------

    def set(self, name: str, data: dict[str, Any]) -> None:
        """Set the REST switch or clock offset `name` from `data` (FaultError: nothing changed)."""
        if name == "clock_offset":
            s = Settings(name, data, ("ms",))
            self.clock_offset_ms = s.required_integer("ms", -MAX_CLOCK_OFFSET_MS, MAX_CLOCK_OFFSET_MS)
            return
        if name not in REST_SWITCHES:
            raise FaultError(f"no such fault: {name!r}; the faults are: {', '.join(NAMES)}")
        own, parse, needs_budget, matches = REST_SWITCHES[name]
        s = Settings(name, data, (*own, *(MATCH_KEYS if matches else ("api_key",)), *BUDGET_KEYS))
        values = parse(s)
        match = Match.parse(s)
        if not matches:  # timeout_after_accept: what it answers late is its match
            match = Match(*ACCEPTED_REQUESTS[values["on"]], match.api_key)
        self.switches[name] = Switch(name, match, Budget.parse(s, needs_budget), values)

    def refuse_websockets(self, drop: WsDrop) -> None:
        self.ws_refusal = WsRefusal(drop.kind, time.monotonic() + drop.refuse_s) if drop.refuse_s else None

    def clear(self, name: str | None = None) -> None:
        """Turn one switch off (or all of them); the counters and the log stay."""
        if name is not None and name not in NAMES:
            raise FaultError(f"no such fault: {name!r}; the faults are: {', '.join(NAMES)}")
        for each in NAMES if name is None else (name,):
            if each == "clock_offset":
                self.clock_offset_ms = 0
            elif each == "websockets":
                self.ws_refusal = None
            else:
                self.switches.pop(each, None)

    # -- applying -------------------------------------------------------------------------

    def take(self, name: str, request: web.Request) -> Switch | None:
        """The switch `name` if it faults this request (using its budget), else None."""
        switch = self.switches.get(name)
        if switch is None:
            return None
        if switch.budget.spent():
            del self.switches[name]
            return None
        if not switch.match.covers(request) or not switch.budget.take(self.rng):
            return None
        if switch.budget.spent():
            del self.switches[name]  # that was its last answer
        return switch

    def refuses_websocket(self, kind: str, path: str) -> bool:
        if self.ws_refusal is None or not self.ws_refusal.refuses(kind):
            return False
        self.record("websockets_refused", "GET", path, None, 503)
        return True

    def record(self, fault: str, method: str, path: str, api_key: str | None, status: int | None, **extra: Any) -> None:
        self.counts[fault] += 1
        self.log.append({"fault": fault, "method": method, "path": path, "api_key": api_key, "status": status, **extra})

    def record_request(self, fault: str, request: web.Request, status: int | None, **extra: Any) -> None:
        self.record(fault, request.method, request.path, request.headers.get("X-MBX-APIKEY"), status, **extra)

    def view(self) -> dict[str, Any]:
        for name in [n for n, s in self.switches.items() if s.budget.spent()]:
            del self.switches[name]
        active = {name: switch.view() for name, switch in sorted(self.switches.items())}
        refusal = self.ws_refusal
        if refusal is not None and refusal.until > time.monotonic():
            active["websockets"] = {"kind": refusal.kind, "refuse_s_left": round(refusal.until - time.monotonic(), 3)}
        if self.clock_offset_ms:
            active["clock_offset"] = {"ms": self.clock_offset_ms}
        return {"active": active, "counts": dict(self.counts), "log": list(self.log)}


def retry_after(switch: Switch) -> int:
    explicit = switch.values.get("retry_after_s")
    if explicit is not None:
        return int(explicit)
    left = switch.budget.seconds_left()
    return max(1, math.ceil(left)) if left else 1
