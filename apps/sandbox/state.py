"""In-memory accounts, keys, balances, orders and trades of the sandbox exchange.

Everything runs on one asyncio loop, so nothing here needs a lock. One API key is one account
(Binance lets an account hold several keys; tests never need that).
"""

from __future__ import annotations

import secrets
import string
from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from apps.sandbox.decimals import ZERO
from apps.sandbox.ids import ID_BASE

DEFAULT_BALANCES: dict[str, Decimal] = {"USDT": Decimal(10000), "BTC": Decimal(1)}
DEFAULT_RATE_LIMIT = 1200  # requests per minute per key (or per IP without a key)
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 64


def new_key_material() -> str:
    return "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))


def valid_key_format(api_key: str) -> bool:
    """Binance API keys are 64 ASCII letters and digits; anything else is -2014."""
    return len(api_key) == KEY_LENGTH and all(c in KEY_ALPHABET for c in api_key)


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Status(StrEnum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    EXPIRED = "EXPIRED"

    @property
    def is_open(self) -> bool:
        return self in (Status.NEW, Status.PARTIALLY_FILLED)


@dataclass(frozen=True)
class Permissions:
    can_read: bool = True
    can_trade: bool = True
    can_withdraw: bool = False
    ip_restrict: bool = False
    # Peers a restricted key accepts; empty with ip_restrict means "no peer at all".
    allowed_ips: tuple[str, ...] = ()

    def allows_peer(self, peer: str | None) -> bool:
        return not self.ip_restrict or (peer is not None and peer in self.allowed_ips)


@dataclass
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO


@dataclass
class Fill:
    trade_id: int
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_maker: bool


@dataclass
class Order:
    order_id: int
    api_key: str
    symbol: str
    client_order_id: str
    side: Side
    type: str
    time_in_force: str
    price: Decimal  # 0 for market orders, as Binance reports them
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time: int
    status: Status = Status.NEW
    executed_qty: Decimal = ZERO
    cumm_quote_qty: Decimal = ZERO
    update_time: int = 0
    # What this order still holds locked: quote for a buy, base for a sell.
    locked: Decimal = ZERO
    fills: list[Fill] = field(default_factory=list)

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty


@dataclass
class Trade:
    """A fill as the account sees it (GET myTrades)."""

    trade_id: int
    order_id: int
    symbol: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool


@dataclass(frozen=True)
class KeySpec:
    """How to (re)create a key: kept for the keys given on the command line, which a reset restores."""

    api_key: str
    secret: str = field(repr=False)
    permissions: Permissions = Permissions()
    balances: tuple[tuple[str, Decimal], ...] = tuple(DEFAULT_BALANCES.items())


@dataclass
class Account:
    api_key: str
    secret: str = field(repr=False)  # never in a repr, so never in a log line by accident
    permissions: Permissions = Permissions()
    created_ms: int = 0
    balances: dict[str, Balance] = field(default_factory=dict)
    rate_limit: int | None = None
    orders: dict[int, Order] = field(default_factory=dict)
    order_ids_by_client_id: dict[str, int] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)

    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    def order_by_client_id(self, client_order_id: str) -> Order | None:
        order_id = self.order_ids_by_client_id.get(client_order_id)
        return None if order_id is None else self.orders.get(order_id)


@dataclass
class Countdown:
    """A dead-man's switch: cancel the account's open orders (of one symbol, or all) at `deadline_ms`."""

    api_key: str
    symbol: str | None
    countdown_ms: int
    deadline_ms: int
    triggered: int = 0
    last_triggered_ms: int | None = None
    active: bool = True


class ExchangeState:
    def __init__(self, startup_keys: list[KeySpec], default_rate_limit: int = DEFAULT_RATE_LIMIT) -> None:
        self.startup_keys = list(startup_keys)
        self.initial_rate_limit = default_rate_limit
        self.reset(now_ms=0)

    def reset(self, now_ms: int) -> None:
        self.accounts: dict[str, Account] = {}
        self.open_orders: dict[str, dict[int, Order]] = {}
        self.next_order_id = ID_BASE + 1
        self.default_rate_limit = self.initial_rate_limit
        self.orders_received: Counter[str] = Counter()
        self.test_orders_received: Counter[str] = Counter()
        self.orders_accepted: Counter[str] = Counter()
        self.countdowns: dict[tuple[str, str | None], Countdown] = {}
        self.request_log: dict[str, deque[int]] = {}
        for spec in self.startup_keys:
            self.add_account(spec, now_ms)

    def add_account(self, spec: KeySpec, now_ms: int) -> Account:
        account = Account(spec.api_key, spec.secret, spec.permissions, created_ms=now_ms)
        for asset, amount in spec.balances:
            account.balance(asset).free = amount
        self.accounts[spec.api_key] = account
        return account

    def take_order_id(self) -> int:
        order_id = self.next_order_id
        self.next_order_id += 1
        return order_id

    def rest(self, order: Order) -> None:
        self.open_orders.setdefault(order.symbol, {})[order.order_id] = order

    def unrest(self, order: Order) -> None:
        self.open_orders.get(order.symbol, {}).pop(order.order_id, None)

    def resting(self, symbol: str) -> list[Order]:
        """Open orders of a symbol in time priority (order ids only grow)."""
        return sorted(self.open_orders.get(symbol, {}).values(), key=lambda o: o.order_id)

    def open_orders_of(self, api_key: str, symbol: str | None = None) -> list[Order]:
        account = self.accounts.get(api_key)
        if account is None:
            return []
        return [o for o in account.orders.values() if o.status.is_open and (symbol is None or o.symbol == symbol)]
