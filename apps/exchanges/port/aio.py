"""The asynchronous port: many accounts at once in one event loop (the kill switch)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt
import certifi

from apps.exchanges.port.errors import OrderNotFound, OrderRejected, acall, translate
from apps.exchanges.port.values import Balances, RemoteOrder, RemoteTrade
from apps.exchanges.port.venues import ccxt_client, order_params, venue

logger = logging.getLogger(__name__)


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
        import ccxt.async_support  # late: ~25 MB of async exchange classes that a bot worker never needs

        client = ccxt_client(ccxt.async_support, exchange_id, dict(credentials))
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
                await acall(client.load_markets)
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

    def __repr__(self) -> str:
        return f"AsyncExchange({self.exchange_id!r})"

    async def load_markets(self) -> None:
        await self._session._load_markets(self._client, venue(self.exchange_id).ccxt_id)

    async def open_orders(self, symbol: str) -> list[RemoteOrder]:
        raw: list[dict[str, Any]] = await acall(self._client.fetch_open_orders, symbol)
        return [RemoteOrder.from_ccxt(o) for o in raw]

    async def cancel_all(self, symbol: str) -> None:
        try:
            await acall(self._client.cancel_all_orders, symbol)
        except OrderNotFound:  # nothing open (Binance says so with an error)
            return

    async def balances(self) -> Balances:
        return Balances.from_ccxt(await acall(self._client.fetch_balance))

    async def amount_to_precision(self, symbol: str, amount: Decimal) -> Decimal:
        try:
            return Decimal(str(self._client.amount_to_precision(symbol, float(amount))))
        except ccxt.BaseError as exc:
            raise translate(exc) from None

    async def market_sell(self, *, symbol: str, amount: Decimal, client_order_id: str) -> RemoteOrder:
        try:
            raw: dict[str, Any] = await acall(
                self._client.create_order,
                symbol,
                "market",
                "sell",
                float(amount),
                None,
                order_params(client_order_id),
            )
        except OrderRejected as exc:
            if "duplicate" not in exc.message.lower():
                raise
            raw = await acall(self._client.fetch_order, "", symbol, order_params(client_order_id))
        return RemoteOrder.from_ccxt(raw)

    async def trades(self, symbol: str, *, since_ms: int | None, limit: int = 100) -> list[RemoteTrade]:
        raw: list[dict[str, Any]] = await acall(self._client.fetch_my_trades, symbol, since_ms, limit)
        return [RemoteTrade.from_ccxt(t) for t in raw]

    def milliseconds(self) -> int:
        return int(self._client.milliseconds())

    async def close(self) -> None:
        try:
            await self._client.close()
        except Exception:
            logger.debug("closing an exchange client failed", exc_info=True)
