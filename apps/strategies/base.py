"""What a strategy is: a typed parameter schema and a pure `decide()` that returns order intents.

Strategies never talk to an exchange or the database. The tick gathers a `MarketView`, asks the
strategy, and passes every intent through the order gate (apps.trading) before anything is sent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal, InvalidOperation
from typing import Any, ClassVar, Protocol

# Re-exported: strategies and the bot form write and step numbers with these.
from apps.core.numbers import on_step as on_step
from apps.core.numbers import plain as plain

# Upper bounds of the parameters (a price or a quote amount; a base amount per order): far beyond any
# real market, and well inside what the bot's decimal columns and the exchange can take.
PRICE_MAX = Decimal("1000000000")
ZERO = Decimal(0)
AMOUNT_MAX = Decimal("1000000")
# What a suggested size keeps above the market's minimum order value, so that a small move of the price does not
# take the order below it.
MIN_MARGIN = Decimal("1.1")
# A suggested grid spans the price this far down and up.
GRID_SPAN = Decimal("0.1")


class ParamError(ValueError):
    """A parameter value is invalid; `field` names it (or "" for the form as a whole)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Param:
    """One typed parameter: the bot form is rendered and validated from these."""

    name: str
    kind: str  # "decimal", "int" or "choice"
    label: str
    help: str
    default: Any
    min: Decimal | int | None = None
    max: Decimal | int | None = None
    choices: tuple[str, ...] = ()
    # What the number measures, for the hints the form shows beside it: "price" (quote per base unit), "base" (an
    # amount of the base asset) or "quote" (an amount of the quote currency); "" for anything else.
    measure: str = ""

    def bounded(self, value: Decimal) -> Decimal:
        """`value` moved inside this parameter's range (a suggestion must be a value the form accepts)."""
        if self.min is not None:
            value = max(value, Decimal(self.min))
        if self.max is not None:
            value = min(value, Decimal(self.max))
        return value

    def parse(self, raw: Any) -> Any:
        if self.kind == "choice":
            if str(raw) not in self.choices:
                raise ParamError(self.name, f"Choose one of: {', '.join(self.choices)}.")
            return str(raw)
        try:
            value: Decimal | int = int(str(raw)) if self.kind == "int" else Decimal(str(raw))
        except (ValueError, InvalidOperation):
            raise ParamError(self.name, "Enter a number.") from None
        if isinstance(value, Decimal) and not value.is_finite():
            raise ParamError(self.name, "Enter a finite number.")
        if self.min is not None and value < self.min:
            raise ParamError(self.name, f"Must be at least {self.min}.")
        if self.max is not None and value > self.max:
            raise ParamError(self.name, f"Must be at most {self.max}.")
        return value


@dataclass(frozen=True)
class OpenOrder:
    client_order_id: str
    side: str
    price: Decimal | None
    amount: Decimal  # what is left of it (not yet filled)


@dataclass(frozen=True)
class MarketView:
    """What a strategy may look at in one tick for one symbol."""

    symbol: str
    price: Decimal
    closes: tuple[Decimal, ...]  # recent candle closes, oldest first
    base_position: Decimal  # base asset held by this bot
    average_entry: Decimal | None
    open_orders: tuple[OpenOrder, ...]
    quote_free: Decimal


@dataclass(frozen=True)
class OrderIntent:
    """An order a strategy would like. `tag` names the intent stably (e.g. "grid-3-buy"): the
    tick turns it into a deterministic client order id, so a retried tick never doubles an order."""

    symbol: str
    side: str  # "buy" or "sell"
    type: str  # "limit" or "market"
    amount: Decimal
    price: Decimal | None
    tag: str


@dataclass
class Decision:
    intents: list[OrderIntent] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)  # client order ids to cancel
    state: dict[str, Any] = field(default_factory=dict)  # persisted for the next tick


class MarketRules(Protocol):
    """What an exchange asks of every order on one market (apps.exchanges.port.Market has these); None: no rule."""

    @property
    def min_amount(self) -> Decimal | None: ...
    @property
    def min_notional(self) -> Decimal | None: ...
    @property
    def price_step(self) -> Decimal | None: ...
    @property
    def amount_step(self) -> Decimal | None: ...


def smallest_amount(price: Decimal, market: MarketRules | None) -> Decimal:
    """The smallest base amount the market takes at `price` (its minimum amount, and worth its minimum order
    value with a margin), on its amount step; zero when the market states neither."""
    need = ZERO
    if market is not None:
        if market.min_amount:
            need = market.min_amount
        if market.min_notional and price > 0:
            need = max(need, market.min_notional * MIN_MARGIN / price)
        need = on_step(need, market.amount_step, ROUND_UP)
    return need


@dataclass(frozen=True)
class Size:
    """An order's (or a position's) size: in quote currency (`quote`), or in base units (`base`) valued at a price
    the parameters fix (`price`, e.g. a grid level, named by `price_note`) or, without one, at the market's price.

    `what` may name the symbol's currencies as {base} and {quote}.
    """

    what: str
    quote: Decimal | None = None
    base: Decimal | None = None
    price: Decimal | None = None
    price_note: str = ""

    @property
    def needs_market_price(self) -> bool:
        return self.quote is None and self.price is None

    def value(self, market_price: Decimal | None = None) -> Decimal:
        """The size in quote currency (`market_price` is used only when the parameters fix no price)."""
        if self.quote is not None:
            return self.quote
        price = self.price if self.price is not None else market_price
        if self.base is None or price is None:
            raise ValueError(f"{self.what}: a base amount and a price are needed to value it")
        return self.base * price


@dataclass(frozen=True)
class Footprint:
    """The most a configuration asks of the bot's risk limits on one symbol, read from its parameters alone: the
    bot form refuses a configuration whose own orders the order gate (apps.trading.gate) would refuse.

    `param` sizes the orders (an error about size is shown on it); `resting_param` sets how many rest at once.
    """

    param: str
    largest_order: Size  # held against the max order notional
    full_position: Size  # the most it buys before it sells: held against the max position notional
    resting_orders: int = 1  # the most orders it places in one tick, all of which may rest on the book at once
    resting_param: str = ""
    resting_what: str = ""


class Strategy(ABC):
    # Templates receive strategy classes; without this Django would try to instantiate them.
    do_not_call_in_templates: ClassVar[bool] = True
    key: ClassVar[str]
    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {p.name: p.default for p in cls.params}

    @classmethod
    def param(cls, name: str) -> Param:
        return next(p for p in cls.params if p.name == name)

    @classmethod
    def suggest(cls, price: Decimal, market: MarketRules | None) -> dict[str, Any]:
        """Values for a new configuration on a market trading at `price` (override): the defaults, fitted to the
        price and to the market's rules, so the first orders are ones the exchange takes."""
        return cls.defaults()

    @classmethod
    def clean(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Parse and check every parameter; raises ParamError for the first bad one."""
        values = {p.name: p.parse(raw.get(p.name, p.default)) for p in cls.params}
        cls.check(values)
        return values

    @classmethod  # noqa: B027 - an optional hook with nothing to do by default, not abstract
    def check(cls, values: dict[str, Any]) -> None:
        """Cross-field rules (override); raise ParamError."""

    @classmethod
    def footprint(cls, values: dict[str, Any]) -> Footprint | None:
        """What these (cleaned) values ask of the risk limits; None when the strategy cannot say."""
        return None

    @classmethod
    def to_json(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in values.items()}

    @abstractmethod
    def decide(self, view: MarketView, state: dict[str, Any]) -> Decision: ...
