"""The asynchronous port: many accounts at once in one event loop (the kill switch)."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import ccxt
import certifi

from apps.exchanges.port.errors import OrderNotFound, OrderRejected, acall, translate
from apps.exchanges.port.values import Balances, RemoteOrder, RemoteTrade
from apps.exchanges.port.venues import ccxt_client, order_params, venue

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Markets are public: a process keeps each exchange's last loaded markets (in a client that never held a
# key) so that a kill does not start by fetching and parsing them. Reloaded when older than this, or when
# an account trades a symbol they lack.
MARKETS_FRESH_S = 3600.0
# Exchanges whose spot cancel-all answers with every order it cancelled (Binance's DELETE /api/v3/openOrders):
# a kill cancels there without listing first.
CANCEL_ALL_NAMES_ORDERS = frozenset({"binance", "binanceus"})
_warm: dict[str, tuple[float, Any]] = {}
_warm_lock = threading.Lock()
# Clients built ahead of a kill, without any credential, for sessions without a rate limiter (the kill's): a
# kill gives each one an account's key and closes it with its session (never back here). Building a ccxt
# client costs ~2 ms of CPU in the kill's one event loop: twenty accounts' cancels waited ~40 ms for them.
_spares: dict[str, list[Any]] = {}
SPARES_MAX = 256


def _warm_source(exchange_id: str, symbols: Iterable[str]) -> Any | None:
    with _warm_lock:
        held = _warm.get(exchange_id)
    if held is None or time.monotonic() - held[0] > MARKETS_FRESH_S:
        return None
    source = held[1]
    return source if all(s in source.markets for s in symbols) else None


def markets_kept(exchange_id: str, *, within_s: float = MARKETS_FRESH_S) -> bool:
    """Whether this process holds the exchange's markets, loaded less than `within_s` ago."""
    with _warm_lock:
        held = _warm.get(exchange_id)
    return held is not None and time.monotonic() - held[0] <= within_s


def _warm_keep(exchange_id: str, loaded: Any) -> None:
    """Keep a copy of `loaded`'s markets in a client built without credentials (the loaded one may hold a key)."""
    import ccxt.async_support  # late: ~25 MB of async exchange classes that a bot worker never needs

    holder = ccxt_client(ccxt.async_support, exchange_id, {})
    holder.set_markets_from_exchange(loaded)
    with _warm_lock:
        _warm[exchange_id] = (time.monotonic(), holder)


def spares_keep(exchange_id: str, count: int) -> int:
    """Hold `count` (at most SPARES_MAX) credential-less clients of the exchange, with the markets this process
    keeps; builds what is missing. Returns how many were built."""
    import ccxt.async_support  # late: ~25 MB of async exchange classes that a bot worker never needs

    with _warm_lock:
        missing = min(count, SPARES_MAX) - len(_spares.get(exchange_id, []))
    built = []
    for _ in range(max(0, missing)):
        client = ccxt_client(ccxt.async_support, exchange_id, {}, enableRateLimit=False)
        source = _warm_source(exchange_id, ())
        if source is not None:
            client.set_markets_from_exchange(source)
        built.append(client)
    with _warm_lock:
        _spares.setdefault(exchange_id, []).extend(built)
    return len(built)


def spares_held(exchange_id: str) -> int:
    with _warm_lock:
        return len(_spares.get(exchange_id, []))


def _spare_take(exchange_id: str, credentials: Mapping[str, str]) -> Any | None:
    """A spare client of the exchange given these credentials, or None (none held, or a credential that is not
    one of the exchange's plain credential fields: a new client is then built with them)."""
    with _warm_lock:
        held = _spares.get(exchange_id)
        client = held.pop() if held else None
    if client is None or not set(credentials) <= set(client.requiredCredentials):
        return None
    for name, value in credentials.items():
        setattr(client, name, value)  # what ccxt's constructor does with each credential it is given
    return client


async def markets_warm(exchange_ids: Iterable[str]) -> list[str]:
    """Load and keep the markets of these exchanges (public calls, no key); returns those that failed."""
    session = AsyncSession()
    failed: list[str] = []
    try:
        ids = sorted(set(exchange_ids))
        outcomes = await asyncio.gather(
            *(session.exchange(exchange_id=i, credentials={}).load_markets(refresh=True) for i in ids),
            return_exceptions=True,
        )
        for exchange_id, outcome in zip(ids, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                logger.warning("markets of %s not loaded: %s", exchange_id, type(outcome).__name__)
                failed.append(exchange_id)
    finally:
        await session.close()
    return failed


@functools.cache
def _tls_context(cafile: str) -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every session and client: building one reads the whole CA
    bundle (~14 ms of CPU), and a kill should not start with that."""
    return ssl.create_default_context(cafile=cafile)


class AsyncSession:
    """What the accounts of one kill share, so that twenty accounts cost little more than one.

    One HTTP session (keep-alive connections, one TLS context; no cookie is kept, so none passes from one
    account to another) and, per exchange, the markets the first client loaded: each ccxt client would
    otherwise build its own TLS context and fetch and parse the exchange's markets itself. Use it inside
    one event loop; `close()` it at the end.
    """

    def __init__(self, *, rate_limit: bool = True) -> None:
        # rate_limit=False: the caller keeps within the exchange's limits itself (the kill: one cancel-all
        # per symbol per account), and ccxt's limiter would add tens of milliseconds after each call.
        self._rate_limit = rate_limit
        self._cafile = certifi.where()
        self._ssl = _tls_context(self._cafile)
        connector = aiohttp.TCPConnector(ssl=self._ssl, enable_cleanup_closed=True, limit=0)
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        self._markets: dict[str, asyncio.Future[Any]] = {}
        self._clients: list[AsyncExchange] = []

    def exchange(self, *, exchange_id: str, credentials: Mapping[str, str]) -> AsyncExchange:
        import ccxt.async_support  # late: ~25 MB of async exchange classes that a bot worker never needs

        client = None if self._rate_limit else _spare_take(exchange_id, credentials)
        if client is None:
            client = ccxt_client(ccxt.async_support, exchange_id, dict(credentials), enableRateLimit=self._rate_limit)
        if client.verify is True and getattr(client, "cafile", None) in (None, self._cafile):
            client.session, client.own_session = self._session, False
            # ccxt would otherwise build its own context (reading the CA bundle: ~14 ms of CPU) at its first
            # request: twenty accounts' first cancels waited ~280 ms for them, one after the other.
            client.ssl_context = self._ssl
            client.timeout_on_exit = 0  # its close() then only forgets the shared session, closed once here
        opened = AsyncExchange(exchange_id, client, self)
        self._clients.append(opened)
        return opened

    async def _load_markets(self, client: Any, exchange_id: str, symbols: Iterable[str], refresh: bool) -> None:
        source = None if refresh else _warm_source(exchange_id, symbols)
        if source is not None:  # loaded before, by this process
            client.set_markets_from_exchange(source)
            return
        ccxt_id = venue(exchange_id).ccxt_id
        loading = self._markets.get(ccxt_id)
        if loading is None:  # the first client of this exchange loads them for all
            loading = self._markets[ccxt_id] = asyncio.get_running_loop().create_future()
            try:
                await acall(client.load_markets)
                _warm_keep(exchange_id, client)
            finally:
                loading.set_result(client if client.markets else None)
            return
        source = await loading
        if source is None:
            await acall(client.load_markets)
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
        # Requests the exchange refused or failed for a while (429, 5xx, timeouts) that were retried or gave up:
        # what the kill reports as the exchange's delay.
        self.troubles = 0

    def _trouble(self) -> None:
        self.troubles += 1

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return await acall(fn, *args, on_trouble=self._trouble, **kwargs)

    async def _order_raw(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        raw: dict[str, Any] = await self._call(self._client.fetch_order, "", symbol, order_params(client_order_id))
        return raw

    def __repr__(self) -> str:
        return f"AsyncExchange({self.exchange_id!r})"

    async def load_markets(self, symbols: Iterable[str] = (), *, refresh: bool = False) -> None:
        """The exchange's markets: kept from an earlier load in this process if they have `symbols`, else loaded."""
        await self._session._load_markets(self._client, self.exchange_id, symbols, refresh)

    async def open_orders(self, symbol: str) -> list[RemoteOrder]:
        raw: list[dict[str, Any]] = await self._call(self._client.fetch_open_orders, symbol)
        return [RemoteOrder.from_ccxt(o) for o in raw]

    async def order(self, *, symbol: str, client_order_id: str) -> RemoteOrder:
        """The exchange's order with our client order id. Raises OrderNotFound."""
        return RemoteOrder.from_ccxt(await self._order_raw(symbol, client_order_id))

    async def cancel_all(self, symbol: str) -> None:
        try:
            await self._call(self._client.cancel_all_orders, symbol)
        except OrderNotFound:  # nothing open (Binance says so with an error)
            return

    @property
    def cancel_all_names_orders(self) -> bool:
        """Whether this exchange's cancel-all answers with the orders it cancelled (see cancel_all_named)."""
        return venue(self.exchange_id).ccxt_id in CANCEL_ALL_NAMES_ORDERS

    async def cancel_all_named(self, symbol: str) -> list[RemoteOrder]:
        """Cancel every open order of `symbol` and return those cancelled, as the exchange named them (only where
        cancel_all_names_orders: elsewhere the answer is a bare status)."""
        try:
            raw: list[dict[str, Any]] = await self._call(self._client.cancel_all_orders, symbol)
        except OrderNotFound:  # nothing open
            return []
        return [RemoteOrder.from_ccxt(o) for o in raw if o.get("id") is not None]

    async def balances(self) -> Balances:
        return Balances.from_ccxt(await self._call(self._client.fetch_balance))

    async def amount_to_precision(self, symbol: str, amount: Decimal) -> Decimal:
        try:
            return Decimal(str(self._client.amount_to_precision(symbol, float(amount))))
        except ccxt.BaseError as exc:
            raise translate(exc) from None

    async def market_sell(self, *, symbol: str, amount: Decimal, client_order_id: str) -> RemoteOrder:
        """Sell at market under our client order id, never twice (as the sync port's place_order)."""

        async def placed() -> dict[str, Any] | None:
            try:
                return await self._order_raw(symbol, client_order_id)
            except OrderNotFound:
                return None

        try:
            raw: dict[str, Any] = await self._call(
                self._client.create_order,
                symbol,
                "market",
                "sell",
                float(amount),
                None,
                order_params(client_order_id),
                resolve=placed,
            )
        except OrderRejected as exc:
            if "duplicate" not in exc.message.lower():
                raise
            raw = await self._order_raw(symbol, client_order_id)
        return RemoteOrder.from_ccxt(raw)

    async def trades(self, symbol: str, *, since_ms: int | None, limit: int = 100) -> list[RemoteTrade]:
        raw: list[dict[str, Any]] = await self._call(self._client.fetch_my_trades, symbol, since_ms, limit)
        return [RemoteTrade.from_ccxt(t) for t in raw]

    def milliseconds(self) -> int:
        return int(self._client.milliseconds())

    async def close(self) -> None:
        try:
            await self._client.close()
        except Exception:
            logger.debug("closing an exchange client failed", exc_info=True)
