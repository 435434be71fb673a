"""What the port speaks in: Decimal amounts and plain values, never ccxt's dictionaries of floats."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from apps.core.numbers import on_step, plain
from apps.exchanges.port.errors import ExchangeError

ZERO = Decimal(0)


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

    def as_sent(self, *, amount: Decimal, price: Decimal | None) -> tuple[Decimal, Decimal | None]:
        """The amount and price as the port's client sends them: the amount cut down to the amount step, the price
        rounded to the tick (ccxt's amount_to_precision and price_to_precision)."""
        return on_step(amount, self.amount_step, ROUND_DOWN), None if price is None else on_step(price, self.price_step)

    def order_problem(self, *, amount: Decimal, price: Decimal) -> str | None:
        """Why the exchange would refuse an order of `amount` (as sent) valued at `price` under the rules it
        publishes (minimum amount, minimum order value), or None."""
        if self.min_amount and amount < self.min_amount:
            return f"{plain(amount)} {self.base} is below {self.symbol}'s minimum amount {plain(self.min_amount)}."
        value = (amount * price).quantize(Decimal("0.00000001"))
        if self.min_notional and value < self.min_notional:
            return (
                f"Worth {plain(value)} {self.quote}, below {self.symbol}'s minimum order value "
                f"{plain(self.min_notional)} {self.quote}."
            )
        return None


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
