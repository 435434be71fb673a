"""The synchronous port: one account on one exchange (bot ticks, key checks, snapshots)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import ccxt
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, TICK_SIZE

from apps.exchanges.port.errors import (
    ExchangeError,
    OrderNotFound,
    OrderRejected,
    call,
    translate,
)
from apps.exchanges.port.values import (
    Balances,
    Candle,
    KeyPermissions,
    Market,
    RemoteOrder,
    RemoteTrade,
    Ticker,
    Transfer,
    dec,
)
from apps.exchanges.port.venues import (
    BINANCE_API_RESTRICTIONS,
    DEADMAN_PARAMS,
    DEADMAN_PER_SYMBOL,
    ccxt_client,
    order_params,
    venue,
)

logger = logging.getLogger(__name__)


class Exchange:
    """One account on one exchange (or public market data, without credentials), synchronously.

    Not thread-safe: give each thread its own (the dead-man's switch has its own).
    """

    def __init__(self, *, exchange_id: str, credentials: Mapping[str, str] | None = None) -> None:
        self.exchange_id = exchange_id
        self.venue = venue(exchange_id)
        self.authenticated = bool(credentials)
        self._client = ccxt_client(ccxt, exchange_id, dict(credentials or {}))

    def __repr__(self) -> str:  # never the client: it holds the key
        return f"Exchange({self.exchange_id!r}, authenticated={self.authenticated})"

    # market data

    def markets(self, *, reload: bool = False) -> dict[str, Market]:
        raw: dict[str, Any] = call(self._client.load_markets, reload)
        mode = getattr(self._client, "precisionMode", TICK_SIZE)
        return {symbol: _market(m, mode) for symbol, m in raw.items()}

    def symbols(self) -> set[str]:
        return set(self.markets())

    def market_decimals(self) -> dict[str, tuple[int | None, int | None]]:
        """Each market's decimal places of (amounts, prices), for showing them; None where the exchange
        does not say in places (significant digits). Reuses the markets this client loaded."""
        raw: dict[str, Any] = call(self._client.load_markets)
        mode = getattr(self._client, "precisionMode", ccxt.TICK_SIZE)
        return {symbol: (_places(m, "amount", mode), _places(m, "price", mode)) for symbol, m in raw.items()}

    def ticker(self, symbol: str) -> Ticker:
        raw: dict[str, Any] = call(self._client.fetch_ticker, symbol)
        return Ticker(
            symbol, dec(raw.get("bid")) or None, dec(raw.get("ask")) or None, dec(raw.get("last") or raw.get("close"))
        )

    def price(self, symbol: str) -> Decimal:
        return self.ticker(symbol).price

    def candles(
        self, symbol: str, *, timeframe: str = "1m", limit: int = 100, since_ms: int | None = None
    ) -> list[Candle]:
        raw: list[list[Any]] = call(self._client.fetch_ohlcv, symbol, timeframe, since_ms, limit)
        return [Candle(int(c[0]), *(Decimal(str(x)) for x in c[1:6])) for c in raw]

    def amount_to_precision(self, symbol: str, amount: Decimal) -> Decimal:
        if self._client.markets is None:
            call(self._client.load_markets)
        try:
            return Decimal(str(self._client.amount_to_precision(symbol, float(amount))))
        except ccxt.BaseError as exc:
            raise translate(exc) from None

    # the account

    def balances(self) -> Balances:
        return Balances.from_ccxt(call(self._client.fetch_balance))

    def key_permissions(self) -> KeyPermissions:
        """Authenticates (a wrong key fails here) and says what the key may do, where the exchange tells."""
        call(self._client.fetch_balance)
        if self.venue.key_permissions != BINANCE_API_RESTRICTIONS:
            return KeyPermissions()
        restrictions: dict[str, Any] = call(self._client.sapiGetAccountApiRestrictions)
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
                raw: list[dict[str, Any]] = call(getattr(self._client, method), None, since_ms)
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
        """Place an order under our client order id, never twice.

        An attempt whose outcome is unknown (timed out, connection dropped, a 5xx answer) may have placed the
        order: before sending again, the order is looked up by its client order id and adopted if there; it is
        sent again (same id) only when the exchange says it has no such order. A duplicate id refused means an
        earlier attempt got through: that order is returned. ExchangeUnavailable: the outcome is still unknown
        (the caller looks it up later, by the same id)."""
        args = (symbol, type, side, float(amount), float(price) if price is not None else None)

        def placed() -> dict[str, Any] | None:
            try:
                return self._order_raw(symbol, client_order_id)
            except OrderNotFound:
                return None

        try:
            raw: dict[str, Any] = call(
                self._client.create_order, *args, order_params(client_order_id), retries=retries, resolve=placed
            )
        except OrderRejected as exc:
            if "duplicate" not in exc.message.lower():
                raise
            return self.order(symbol=symbol, client_order_id=client_order_id)
        return RemoteOrder.from_ccxt(raw)

    def cancel_order(self, *, symbol: str, exchange_order_id: str | None, client_order_id: str) -> RemoteOrder:
        """Cancel one order; when it is already gone, the exchange's word on what became of it."""
        params = {} if exchange_order_id else order_params(client_order_id)
        try:
            raw: dict[str, Any] = call(self._client.cancel_order, exchange_order_id or "", symbol, params)
        except OrderNotFound:
            return self.order(symbol=symbol, client_order_id=client_order_id)
        return RemoteOrder.from_ccxt(raw)

    def cancel_all(self, symbol: str) -> None:
        try:
            call(self._client.cancel_all_orders, symbol)
        except OrderNotFound:  # nothing open (Binance says so with an error)
            return

    def order(self, *, symbol: str, client_order_id: str) -> RemoteOrder:
        """The exchange's order with our client order id. Raises OrderNotFound."""
        return RemoteOrder.from_ccxt(self._order_raw(symbol, client_order_id))

    def _order_raw(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        raw: dict[str, Any] = call(self._client.fetch_order, "", symbol, order_params(client_order_id))
        return raw

    def open_orders(self, symbol: str | None = None) -> list[RemoteOrder]:
        """Open orders of one symbol, or of every symbol (costs more request weight on most exchanges)."""
        if symbol is None:
            # A thief trades whatever market they like; ccxt asks for the extra weight to be acknowledged.
            self._client.options.setdefault("fetchOpenOrders", {})["warnWithoutSymbol"] = False
        raw: list[dict[str, Any]] = call(self._client.fetch_open_orders, symbol)
        return [RemoteOrder.from_ccxt(o) for o in raw]

    def trades(self, symbol: str, *, since_ms: int | None, limit: int) -> list[RemoteTrade]:
        raw: list[dict[str, Any]] = call(self._client.fetch_my_trades, symbol, since_ms, limit)
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
                call(client.load_markets)
            for symbol in symbols:
                try:
                    market_id = client.market_id(symbol)
                except ccxt.BaseError as exc:
                    raise translate(exc) from None
                params = {"symbol": market_id, "countdownTime": timeout_ms}
                call(client.request, "countdownCancelAll", ["private"], "POST", params, retries=retries)
            return
        extra = DEADMAN_PARAMS.get(self.venue.ccxt_id, {})
        if self.venue.ccxt_id in DEADMAN_PER_SYMBOL:
            for symbol in symbols:
                call(client.cancel_all_orders_after, timeout_ms, {**extra, "symbol": symbol}, retries=retries)
            return
        call(client.cancel_all_orders_after, timeout_ms, dict(extra), retries=retries)

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                logger.debug("closing an exchange client failed", exc_info=True)


def _step(precision: Any, mode: int) -> Decimal | None:
    """A precision as a step (0.01), whichever way the ccxt class counts it; None when it is not a step."""
    value = dec(precision)
    if value is None or mode == TICK_SIZE:
        return value
    if mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(value))
    return None  # significant digits: no fixed step


def _market(raw: Mapping[str, Any], mode: int = TICK_SIZE) -> Market:
    precision = raw.get("precision") or {}
    limits = raw.get("limits") or {}
    return Market(
        symbol=str(raw.get("symbol")),
        base=str(raw.get("base") or ""),
        quote=str(raw.get("quote") or ""),
        spot=bool(raw.get("spot")),
        active=raw.get("active") is not False,
        amount_step=_step(precision.get("amount"), mode),
        price_step=_step(precision.get("price"), mode),
        min_amount=dec((limits.get("amount") or {}).get("min")),
        min_notional=dec((limits.get("cost") or {}).get("min")),
    )


def _places(raw: Mapping[str, Any], which: str, mode: int) -> int | None:
    value = dec((raw.get("precision") or {}).get(which))
    if value is None or value <= 0:
        return None
    if mode == ccxt.DECIMAL_PLACES:
        return int(value)
    if mode != ccxt.TICK_SIZE:
        return None
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else None
