"""The exchange port: the one module that imports ccxt, and the only place exchange-specific details live.

Everything else talks to an exchange through `Exchange` (synchronous: bot ticks, key checks, snapshots) or
`AsyncExchange` opened from an `AsyncSession` (many accounts at once: the kill switch). Both speak in the
project's own values (Decimal amounts, `RemoteOrder`, `RemoteTrade`, `Balances`) and raise the project's
own errors (`ExchangeError` and its kinds), whose messages carry the exchange's reason but never a URL, a
signature or a key. Calls that are safe to repeat are retried with backoff on network errors, 5xx and rate
limits, on the synchronous and the asynchronous path alike; placing an order is retried only because it
carries a client order id, so a retry is adopted instead of doubled.

A venue is how one exchange id is reached: which ccxt class, how its client is configured, which
exchange-specific parameters its calls need (the key-permission endpoint, the dead-man's switch). Real
exchanges are their ccxt class as is; the local sandbox exchange registers itself as a venue from its own
app (`apps.sandbox`), so that production, which does not install that app, does not know it.

A client is built from credentials handed in by the caller (read from Vault by a process allowed to, or typed
by an admin): this module never fetches a secret, and a client never shows its credentials in its repr.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import ccxt
import ccxt.async_support
import certifi
from django.conf import settings

from apps.core.exceptions import ApplicationError

logger = logging.getLogger(__name__)
T = TypeVar("T")
ZERO = Decimal(0)


# -- errors ------------------------------------------------------------------------------------------


class ExchangeError(ApplicationError):
    """The exchange refused or failed; the message is safe to show."""


class KeyRejected(ExchangeError):
    """The exchange does not accept this key (wrong key or secret, revoked, IP not allowed)."""


class PermissionRefused(ExchangeError):
    """The key is valid but lacks a permission for this call."""


class OrderRejected(ExchangeError):
    """The exchange refused an order (funds, limits...)."""


class OrderNotFound(ExchangeError):
    pass


class ExchangeUnavailable(ExchangeError):
    """Network trouble, maintenance or rate limiting that outlasted our retries: the outcome is unknown."""


class ClockSkew(ExchangeError):
    """The exchange refused the request's timestamp (our clock and its clock disagree)."""


_URL = re.compile(r"https?://\S+|wss?://\S+")


def safe_reason(exc: BaseException) -> str:
    """The exchange's reason from a ccxt error, without URLs (they carry signed query strings)."""
    text = _URL.sub("[url]", str(exc))
    # ccxt prefixes its messages with the exchange id and often appends the JSON body.
    match = re.search(r'"msg"\s*:\s*"([^"]+)"', text)
    reason = match.group(1) if match else text
    return reason.strip()[:300] or type(exc).__name__


def translate(exc: BaseException) -> ExchangeError:
    """ccxt's exception as one of ours (anything else as a plain ExchangeError naming its type only)."""
    if not isinstance(exc, ccxt.BaseError):
        return ExchangeUnavailable(f"The exchange call failed: {type(exc).__name__}")
    reason = safe_reason(exc)
    if isinstance(exc, ccxt.AuthenticationError | ccxt.AccountSuspended):
        return KeyRejected(f"The exchange rejected the key: {reason}")
    if isinstance(exc, ccxt.PermissionDenied):
        return PermissionRefused(f"The key lacks a permission: {reason}")
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFound(f"Order not found: {reason}")
    if isinstance(exc, ccxt.InvalidOrder | ccxt.InsufficientFunds):
        return OrderRejected(f"The exchange refused the order: {reason}")
    if isinstance(exc, ccxt.InvalidNonce):
        return ClockSkew(f"The exchange says our clock is off: {reason}")
    if isinstance(exc, ccxt.NetworkError):  # includes RateLimitExceeded / DDoSProtection (429/418), 5xx
        return ExchangeUnavailable(f"The exchange is unavailable: {reason}")
    return ExchangeError(f"The exchange refused: {reason}")


def _retryable(exc: BaseException) -> bool:
    # InvalidNonce is a NetworkError in ccxt's tree, but retrying with the same clock won't help.
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ClientError):
        return True
    return isinstance(exc, ccxt.NetworkError) and not isinstance(exc, ccxt.InvalidNonce)


def _delay(attempt: int, exc: BaseException) -> float:
    """Backoff before retry `attempt` (1, 2, ...): doubling from 0.25 s, longer after a rate limit."""
    base = 1.0 if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection) else 0.25
    return float(min(base * 2 ** (attempt - 1), 4.0))


def _attempts(retries: int | None) -> int:
    return 1 + (int(settings.EXCHANGE_RETRIES) if retries is None else retries)


def _call(fn: Callable[..., T], *args: Any, retries: int | None = None, **kwargs: Any) -> T:
    attempts = _attempts(retries)
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, ccxt.BaseError):
                raise
            if attempt < attempts and _retryable(exc):
                delay = _delay(attempt, exc)
                logger.info(
                    "exchange call %s failed (%s); retry %d in %.2f s",
                    getattr(fn, "__name__", fn),
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                time.sleep(delay)
                continue
            raise translate(exc) from None
    raise AssertionError("unreachable")


async def _acall(fn: Callable[..., Awaitable[T]], *args: Any, retries: int | None = None, **kwargs: Any) -> T:
    attempts = _attempts(retries)
    for attempt in range(1, attempts + 1):
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, ccxt.BaseError | asyncio.TimeoutError | aiohttp.ClientError):
                raise
            if attempt < attempts and _retryable(exc):
                await asyncio.sleep(_delay(attempt, exc))
                continue
            raise translate(exc) from None
    raise AssertionError("unreachable")


# -- values ------------------------------------------------------------------------------------------


def dec(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


@dataclass(frozen=True)
class Ticker:
    symbol: str
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None

    @property
    def price(self) -> Decimal:
        """The market price now: the middle of the book's top, else the last trade.

        Not the last trade first: on a quiet market it can lag the book by far (after a gap, say).
        """
        if self.bid and self.ask:
            return (self.bid + self.ask) / 2
        if self.last is None:
            raise ExchangeError(f"No price for {self.symbol}.")
        return self.last

    @property
    def touch(self) -> tuple[Decimal, Decimal]:
        """(bid, ask), falling back to the last price when the exchange gives no book top."""
        bid, ask = self.bid or self.last, self.ask or self.last
        if bid is None or ask is None:
            raise ExchangeError(f"No price for {self.symbol}.")
        return bid, ask


@dataclass(frozen=True)
class Candle:
    at_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True)
class RemoteOrder:
    """An order as the exchange sees it. `status`: open, closed (filled), canceled, expired, rejected."""

    id: str | None
    client_order_id: str | None
    symbol: str
    side: str
    type: str
    status: str
    price: Decimal | None
    amount: Decimal | None
    filled: Decimal | None
    average: Decimal | None
    at_ms: int | None

    @classmethod
    def from_ccxt(cls, raw: Mapping[str, Any]) -> RemoteOrder:
        status = str(raw.get("status") or "open")
        return cls(
            id=str(raw["id"]) if raw.get("id") is not None else None,
            client_order_id=str(raw["clientOrderId"]) if raw.get("clientOrderId") else None,
            symbol=str(raw.get("symbol") or ""),
            side=str(raw.get("side") or ""),
            type=str(raw.get("type") or ""),
            status="canceled" if status == "cancelled" else status,
            price=dec(raw.get("price")) or None,
            amount=dec(raw.get("amount")),
            filled=dec(raw.get("filled")),
            average=dec(raw.get("average")) or None,
            at_ms=int(raw["timestamp"]) if raw.get("timestamp") is not None else None,
        )


@dataclass(frozen=True)
class RemoteTrade:
    id: str
    order_id: str
    symbol: str
    side: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_currency: str
    at_ms: int

    @classmethod
    def from_ccxt(cls, raw: Mapping[str, Any]) -> RemoteTrade:
        fee = raw.get("fee") or {}
        return cls(
            id=str(raw["id"]),
            order_id=str(raw.get("order") or ""),
            symbol=str(raw.get("symbol") or ""),
            side=str(raw.get("side") or ""),
            price=Decimal(str(raw["price"])),
            amount=Decimal(str(raw["amount"])),
            fee=Decimal(str(fee.get("cost") or 0)),
            fee_currency=str(fee.get("currency") or ""),
            at_ms=int(raw["timestamp"]),
        )


@dataclass(frozen=True)
class Balances:
    free: dict[str, Decimal]
    total: dict[str, Decimal]

    @classmethod
    def from_ccxt(cls, raw: Mapping[str, Any]) -> Balances:
        def amounts(part: Any) -> dict[str, Decimal]:
            return {str(asset): Decimal(str(v)) for asset, v in (part or {}).items() if v is not None}

        return cls(free=amounts(raw.get("free")), total=amounts(raw.get("total")))

    def held(self) -> dict[str, Decimal]:
        """The assets with a non-zero total, by name."""
        return {asset: amount for asset, amount in sorted(self.total.items()) if amount != 0}


@dataclass(frozen=True)
class Market:
    symbol: str
    base: str
    quote: str
    spot: bool
    active: bool
    amount_step: Decimal | None
    price_step: Decimal | None
    min_amount: Decimal | None
    min_notional: Decimal | None


@dataclass(frozen=True)
class KeyPermissions:
    """What the exchange says a key may do; None where the exchange does not tell."""

    can_trade: bool | None = None
    can_withdraw: bool | None = None
    ip_restricted: bool | None = None


@dataclass(frozen=True)
class Transfer:
    """A deposit or withdrawal: what moved and when; no address, tag or memo is kept."""

    kind: str  # deposit, withdrawal
    id: str
    currency: str
    amount: Decimal | None
    status: str
    at_ms: int | None

    @classmethod
    def from_ccxt(cls, kind: str, raw: Mapping[str, Any]) -> Transfer:
        return cls(
            kind=kind,
            id=str(raw.get("id") or raw.get("txid") or ""),
            currency=str(raw.get("currency") or ""),
            amount=dec(raw.get("amount")),
            status=str(raw.get("status") or ""),
            at_ms=int(raw["timestamp"]) if raw.get("timestamp") is not None else None,
        )


# -- venues ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Venue:
    """How one exchange id is reached, and what is particular about it.

    `configure` runs on every new ccxt client (sync and async) before its first call. `key_permissions`
    names how the exchange tells what a key may do ("binance-api-restrictions") or None. `deadman` is
    "countdown" (Binance's spot `countdownCancelAll`, one countdown per symbol), "ccxt" (ccxt's
    `cancel_all_orders_after`, where the class has it) or None.
    """

    id: str
    ccxt_id: str
    configure: Callable[[Any], None] | None = None
    key_permissions: str | None = None
    deadman: str | None = "ccxt"
    transfer_history: bool = True
    note: str = ""


# Exchanges whose API says what a key may do (Binance's /sapi/v1/account/apiRestrictions).
BINANCE_API_RESTRICTIONS = "binance-api-restrictions"
_VENUES: dict[str, Venue] = {}
# Classes whose `cancel_all_orders_after` defaults to derivatives: our bots trade spot.
_DEADMAN_PARAMS: dict[str, dict[str, str]] = {
    "bybit": {"type": "spot"},
    "bybiteu": {"type": "spot"},
    "bybitid": {"type": "spot"},
    "bingx": {"type": "spot"},
}
# Classes whose `cancel_all_orders_after` needs a symbol: one countdown per market.
_DEADMAN_PER_SYMBOL = frozenset({"whitebit"})


def register_venue(venue: Venue) -> None:
    """Add (or replace) a venue that is not a ccxt exchange id as is, e.g. the local sandbox exchange."""
    if venue.ccxt_id not in ccxt.exchanges:
        raise ValueError(f"{venue.ccxt_id!r} is not a ccxt exchange")
    _VENUES[venue.id] = venue


def venue(exchange_id: str) -> Venue:
    found = _VENUES.get(exchange_id)
    if found is not None:
        return found
    if exchange_id not in ccxt.exchanges:
        raise ExchangeError(f"Unknown exchange {exchange_id!r}.")
    permissions = BINANCE_API_RESTRICTIONS if exchange_id in ("binance", "binanceus") else None
    return Venue(id=exchange_id, ccxt_id=exchange_id, key_permissions=permissions)


def supported_exchanges() -> list[str]:
    """Registered venues first (the sandbox where installed), then every ccxt exchange."""
    return [*sorted(_VENUES), *(e for e in ccxt.exchanges if e not in _VENUES)]


def required_credentials(exchange_id: str) -> list[str]:
    """The credential fields an exchange needs (apiKey and secret, sometimes password or uid)."""
    cls = getattr(ccxt, venue(exchange_id).ccxt_id)
    needed: dict[str, bool] = cls().requiredCredentials
    order = ["apiKey", "secret", "password", "uid"]
    return [name for name in order if needed.get(name)] + sorted(
        name for name, on in needed.items() if on and name not in order
    )


def _ccxt_client(module: Any, exchange_id: str, credentials: Mapping[str, str], **options: Any) -> Any:
    v = venue(exchange_id)
    cls = getattr(module, v.ccxt_id)
    client = cls({**credentials, "enableRateLimit": True, "timeout": settings.EXCHANGE_TIMEOUT_MS, **options})
    if v.configure is not None:
        v.configure(client)
    return client


def _order_params(client_order_id: str) -> dict[str, str]:
    # ccxt's unified name; each class maps it (binance: newClientOrderId / origClientOrderId).
    return {"clientOrderId": client_order_id}


# -- the synchronous port -------------------------------------------------------------------------


class Exchange:
    """One account on one exchange (or public market data, without credentials), synchronously.

    Not thread-safe: give each thread its own (the dead-man's switch has its own).
    """

    def __init__(self, *, exchange_id: str, credentials: Mapping[str, str] | None = None) -> None:
        self.exchange_id = exchange_id
        self.venue = venue(exchange_id)
        self.authenticated = bool(credentials)
        self._client = _ccxt_client(ccxt, exchange_id, dict(credentials or {}))

    def __repr__(self) -> str:  # never the client: it holds the key
        return f"Exchange({self.exchange_id!r}, authenticated={self.authenticated})"

    # market data

    def markets(self, *, reload: bool = False) -> dict[str, Market]:
        raw: dict[str, Any] = _call(self._client.load_markets, reload)
        return {symbol: _market(m) for symbol, m in raw.items()}

    def symbols(self) -> set[str]:
        return set(self.markets())

    def ticker(self, symbol: str) -> Ticker:
        raw: dict[str, Any] = _call(self._client.fetch_ticker, symbol)
        return Ticker(
            symbol, dec(raw.get("bid")) or None, dec(raw.get("ask")) or None, dec(raw.get("last") or raw.get("close"))
        )

    def price(self, symbol: str) -> Decimal:
        return self.ticker(symbol).price

    def candles(
        self, symbol: str, *, timeframe: str = "1m", limit: int = 100, since_ms: int | None = None
    ) -> list[Candle]:
        raw: list[list[Any]] = _call(self._client.fetch_ohlcv, symbol, timeframe, since_ms, limit)
        return [Candle(int(c[0]), *(Decimal(str(x)) for x in c[1:6])) for c in raw]

    def amount_to_precision(self, symbol: str, amount: Decimal) -> Decimal:
        if self._client.markets is None:
            _call(self._client.load_markets)
        try:
            return Decimal(str(self._client.amount_to_precision(symbol, float(amount))))
        except ccxt.BaseError as exc:
            raise translate(exc) from None

    # the account

    def balances(self) -> Balances:
        return Balances.from_ccxt(_call(self._client.fetch_balance))

    def key_permissions(self) -> KeyPermissions:
        """Authenticates (a wrong key fails here) and says what the key may do, where the exchange tells."""
        _call(self._client.fetch_balance)
        if self.venue.key_permissions != BINANCE_API_RESTRICTIONS:
            return KeyPermissions()
        restrictions: dict[str, Any] = _call(self._client.sapiGetAccountApiRestrictions)
        return KeyPermissions(
            can_trade=bool(restrictions.get("enableSpotAndMarginTrading")),
            can_withdraw=bool(restrictions.get("enableWithdrawals")),
            ip_restricted=bool(restrictions.get("ipRestrict")),
        )

    def transfers(self, *, since_ms: int | None) -> tuple[list[Transfer], list[str]]:
        """Deposits and withdrawals since then, and notes on what the exchange could not tell."""
        if not self.venue.transfer_history:
            return [], [self.venue.note or f"{self.exchange_id} keeps no deposit or withdrawal history."]
        items: list[Transfer] = []
        notes: list[str] = []
        for kind, capability, method in (
            ("deposit", "fetchDeposits", "fetch_deposits"),
            ("withdrawal", "fetchWithdrawals", "fetch_withdrawals"),
        ):
            if not self._client.has.get(capability):
                notes.append(f"{self.exchange_id} offers no {kind} history.")
                continue
            try:
                raw: list[dict[str, Any]] = _call(getattr(self._client, method), None, since_ms)
            except ExchangeError as exc:
                notes.append(f"{kind.capitalize()} history unavailable: {exc.message}")
                continue
            items.extend(Transfer.from_ccxt(kind, t) for t in raw)
        return items, notes

    # orders

    def place_order(
        self,
        *,
        symbol: str,
        side: str,
        type: str,
        amount: Decimal,
        price: Decimal | None,
        client_order_id: str,
        retries: int | None = None,
    ) -> RemoteOrder:
        """Place an order under our client order id. A duplicate id means an earlier attempt got through
        (a retry after a timeout, say): that order is returned instead of a second one."""
        args = (symbol, type, side, float(amount), float(price) if price is not None else None)
        try:
            raw: dict[str, Any] = _call(
                self._client.create_order, *args, _order_params(client_order_id), retries=retries
            )
        except OrderRejected as exc:
            if "duplicate" not in exc.message.lower():
                raise
            return self.order(symbol=symbol, client_order_id=client_order_id)
        return RemoteOrder.from_ccxt(raw)

    def cancel_order(self, *, symbol: str, exchange_order_id: str | None, client_order_id: str) -> RemoteOrder:
        """Cancel one order; when it is already gone, the exchange's word on what became of it."""
        params = {} if exchange_order_id else _order_params(client_order_id)
        try:
            raw: dict[str, Any] = _call(self._client.cancel_order, exchange_order_id or "", symbol, params)
        except OrderNotFound:
            return self.order(symbol=symbol, client_order_id=client_order_id)
        return RemoteOrder.from_ccxt(raw)

    def cancel_all(self, symbol: str) -> None:
        try:
            _call(self._client.cancel_all_orders, symbol)
        except OrderNotFound:  # nothing open (Binance says so with an error)
            return

    def order(self, *, symbol: str, client_order_id: str) -> RemoteOrder:
        """The exchange's order with our client order id. Raises OrderNotFound."""
        raw: dict[str, Any] = _call(self._client.fetch_order, "", symbol, _order_params(client_order_id))
        return RemoteOrder.from_ccxt(raw)

    def open_orders(self, symbol: str | None = None) -> list[RemoteOrder]:
        """Open orders of one symbol, or of every symbol (costs more request weight on most exchanges)."""
        if symbol is None:
            # A thief trades whatever market they like; ccxt asks for the extra weight to be acknowledged.
            self._client.options.setdefault("fetchOpenOrders", {})["warnWithoutSymbol"] = False
        raw: list[dict[str, Any]] = _call(self._client.fetch_open_orders, symbol)
        return [RemoteOrder.from_ccxt(o) for o in raw]

    def trades(self, symbol: str, *, since_ms: int | None, limit: int) -> list[RemoteTrade]:
        raw: list[dict[str, Any]] = _call(self._client.fetch_my_trades, symbol, since_ms, limit)
        return [RemoteTrade.from_ccxt(t) for t in raw]

    # dead-man's switch: a countdown the exchange keeps; unless set again before it runs out, the
    # exchange cancels the open orders itself.

    @property
    def deadman_available(self) -> bool:
        if self.venue.deadman == "countdown":
            return True
        return self.venue.deadman == "ccxt" and bool(self._client.has.get("cancelAllOrdersAfter"))

    def deadman_arm(self, *, symbols: Iterable[str], timeout_ms: int, retries: int | None = None) -> None:
        """Set (or push back) the countdown: the exchange cancels the open orders in `timeout_ms` unless set
        again. One countdown per symbol where the exchange works so, else the exchange's own scope."""
        if timeout_ms <= 0:
            raise ExchangeError("The dead-man's switch needs a positive timeout; use deadman_disarm to switch it off.")
        self._deadman_set(list(symbols), int(timeout_ms), retries)

    def deadman_disarm(self, *, symbols: Iterable[str]) -> None:
        """Switch the countdown off, so that the exchange leaves the open orders alone."""
        self._deadman_set(list(symbols), 0, None)

    def _deadman_set(self, symbols: list[str], timeout_ms: int, retries: int | None) -> None:
        if not self.deadman_available:
            raise ExchangeError(f"{self.exchange_id} offers no dead-man's switch (cancelAllOrdersAfter).")
        client = self._client
        if self.venue.deadman == "countdown":
            # Binance spot's countdownCancelAll has no ccxt method: its signed request path.
            if client.markets is None:
                _call(client.load_markets)
            for symbol in symbols:
                try:
                    market_id = client.market_id(symbol)
                except ccxt.BaseError as exc:
                    raise translate(exc) from None
                params = {"symbol": market_id, "countdownTime": timeout_ms}
                _call(client.request, "countdownCancelAll", ["private"], "POST", params, retries=retries)
            return
        extra = _DEADMAN_PARAMS.get(self.venue.ccxt_id, {})
        if self.venue.ccxt_id in _DEADMAN_PER_SYMBOL:
            for symbol in symbols:
                _call(client.cancel_all_orders_after, timeout_ms, {**extra, "symbol": symbol}, retries=retries)
            return
        _call(client.cancel_all_orders_after, timeout_ms, dict(extra), retries=retries)

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                logger.debug("closing an exchange client failed", exc_info=True)


def _market(raw: Mapping[str, Any]) -> Market:
    precision = raw.get("precision") or {}
    limits = raw.get("limits") or {}
    return Market(
        symbol=str(raw.get("symbol")),
        base=str(raw.get("base") or ""),
        quote=str(raw.get("quote") or ""),
        spot=bool(raw.get("spot")),
        active=raw.get("active") is not False,
        amount_step=dec(precision.get("amount")),
        price_step=dec(precision.get("price")),
        min_amount=dec((limits.get("amount") or {}).get("min")),
        min_notional=dec((limits.get("cost") or {}).get("min")),
    )


# -- the asynchronous port: many accounts at once (the kill switch) ---------------------------------


class AsyncSession:
    """What the accounts of one kill share, so that twenty accounts cost little more than one.

    One HTTP session (keep-alive connections, one TLS context; no cookie is kept, so none passes from one
    account to another) and, per exchange, the markets the first client loaded: each ccxt client would
    otherwise build its own TLS context and fetch and parse the exchange's markets itself. Use it inside
    one event loop; `close()` it at the end.
    """

    def __init__(self) -> None:
        self._cafile = certifi.where()
        connector = aiohttp.TCPConnector(
            ssl=ssl.create_default_context(cafile=self._cafile), enable_cleanup_closed=True, limit=0
        )
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        self._markets: dict[str, asyncio.Future[Any]] = {}
        self._clients: list[AsyncExchange] = []

    def exchange(self, *, exchange_id: str, credentials: Mapping[str, str]) -> AsyncExchange:
        client = _ccxt_client(ccxt.async_support, exchange_id, dict(credentials))
        if client.verify is True and getattr(client, "cafile", None) in (None, self._cafile):
            client.session, client.own_session = self._session, False
            client.timeout_on_exit = 0  # its close() then only forgets the shared session, closed once here
        opened = AsyncExchange(exchange_id, client, self)
        self._clients.append(opened)
        return opened

    async def _load_markets(self, client: Any, ccxt_id: str) -> None:
        loading = self._markets.get(ccxt_id)
        if loading is None:  # the first client of this exchange loads them for all
            loading = self._markets[ccxt_id] = asyncio.get_running_loop().create_future()
            try:
                await _acall(client.load_markets)
            finally:
                loading.set_result(client if client.markets else None)
            return
        source = await loading
        if source is None:
            await _acall(client.load_markets)
        else:
            client.set_markets_from_exchange(source)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients))
        self._clients.clear()
        await self._session.close()  # waits until its connections are closed (aiohttp >= 3.12)


class AsyncExchange:
    """One account on one exchange inside an AsyncSession: the calls a kill needs."""

    def __init__(self, exchange_id: str, client: Any, session: AsyncSession) -> None:
        self.exchange_id = exchange_id
        self._client = client
        self._session = session

    def __repr__(self) -> str:
        return f"AsyncExchange({self.exchange_id!r})"

    async def load_markets(self) -> None:
        await self._session._load_markets(self._client, venue(self.exchange_id).ccxt_id)

    async def open_orders(self, symbol: str) -> list[RemoteOrder]:
        raw: list[dict[str, Any]] = await _acall(self._client.fetch_open_orders, symbol)
        return [RemoteOrder.from_ccxt(o) for o in raw]

    async def cancel_all(self, symbol: str) -> None:
        try:
            await _acall(self._client.cancel_all_orders, symbol)
        except OrderNotFound:  # nothing open (Binance says so with an error)
            return

    async def balances(self) -> Balances:
        return Balances.from_ccxt(await _acall(self._client.fetch_balance))

    async def amount_to_precision(self, symbol: str, amount: Decimal) -> Decimal:
        try:
            return Decimal(str(self._client.amount_to_precision(symbol, float(amount))))
        except ccxt.BaseError as exc:
            raise translate(exc) from None

    async def market_sell(self, *, symbol: str, amount: Decimal, client_order_id: str) -> RemoteOrder:
        try:
            raw: dict[str, Any] = await _acall(
                self._client.create_order,
                symbol,
                "market",
                "sell",
                float(amount),
                None,
                _order_params(client_order_id),
            )
        except OrderRejected as exc:
            if "duplicate" not in exc.message.lower():
                raise
            raw = await _acall(self._client.fetch_order, "", symbol, _order_params(client_order_id))
        return RemoteOrder.from_ccxt(raw)

    async def trades(self, symbol: str, *, since_ms: int | None, limit: int = 100) -> list[RemoteTrade]:
        raw: list[dict[str, Any]] = await _acall(self._client.fetch_my_trades, symbol, since_ms, limit)
        return [RemoteTrade.from_ccxt(t) for t in raw]

    def milliseconds(self) -> int:
        return int(self._client.milliseconds())

    async def close(self) -> None:
        try:
            await self._client.close()
        except Exception:
            logger.debug("closing an exchange client failed", exc_info=True)
