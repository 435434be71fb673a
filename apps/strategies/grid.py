from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

from apps.strategies.base import (
    AMOUNT_MAX,
    GRID_SPAN,
    PRICE_MAX,
    ZERO,
    Decision,
    Footprint,
    MarketRules,
    MarketView,
    OrderIntent,
    Param,
    ParamError,
    Size,
    Strategy,
    on_step,
    plain,
    smallest_amount,
)


class GridStrategy(Strategy):
    """Resting buy orders below the price and sells above it, on evenly spaced levels."""

    key = "grid"
    name = "Grid"
    description = (
        "Buys at evenly spaced levels below the price, as far as the free quote pays, and sells what it holds one "
        "level up, inside a price range."
    )
    params = (
        Param(
            "lower",
            "decimal",
            "Lower price",
            "Bottom of the grid, in quote currency.",
            Decimal("20000"),
            min=Decimal("0.00000001"),
            max=PRICE_MAX,
            measure="price",
        ),
        Param(
            "upper",
            "decimal",
            "Upper price",
            "Top of the grid, in quote currency.",
            Decimal("40000"),
            min=Decimal("0.00000001"),
            max=PRICE_MAX,
            measure="price",
        ),
        Param("levels", "int", "Levels", "How many price levels between lower and upper.", 10, min=2, max=200),
        Param(
            "order_amount",
            "decimal",
            "Amount per order",
            "Base currency per grid order.",
            Decimal("0.001"),
            min=Decimal("0.00000001"),
            max=AMOUNT_MAX,
            measure="base",
        ),
    )

    @classmethod
    def suggest(cls, price: Decimal, market: MarketRules | None) -> dict[str, Any]:
        # The price 10 % either side, on the market's tick (inward, so the range stays inside the span), and orders
        # the exchange takes even on the lowest level, where an order is worth least.
        values = cls.defaults()
        step = market.price_step if market is not None else None
        lower = cls.param("lower").bounded(on_step(price * (1 - GRID_SPAN), step, ROUND_UP))
        upper = cls.param("upper").bounded(on_step(price * (1 + GRID_SPAN), step, ROUND_DOWN))
        if upper > lower:
            values["lower"], values["upper"] = lower, upper
            amount = max(values["order_amount"], smallest_amount(lower, market))
            values["order_amount"] = cls.param("order_amount").bounded(amount)
        return values

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        if values["lower"] >= values["upper"]:
            raise ParamError("upper", "The upper price must be above the lower price.")

    @classmethod
    def footprint(cls, values: dict[str, Any]) -> Footprint:
        # Limit orders at the levels: buys below the price, sells of what it bought one level up, never both on one
        # level, so at most one order per level rests. The largest is a sell at the top level; the most it holds
        # is one order amount bought on every level.
        amount, lower, upper, n = values["order_amount"], values["lower"], values["upper"], values["levels"]
        full = sum((amount * level for level in cls(values).levels()), ZERO)
        return Footprint(
            param="order_amount",
            largest_order=Size("Grid order", base=amount, price=upper, price_note="its top level"),
            full_position=Size(
                f"A full grid ({n} levels of {plain(amount)} {{base}}, {plain(lower)} to {plain(upper)} {{quote}}) =",
                quote=full,
            ),
            resting_orders=n,
            resting_param="levels",
            resting_what=f"A grid of {n} levels places up to {n} orders at once",
        )

    def levels(self) -> list[Decimal]:
        lower, upper, n = self.values["lower"], self.values["upper"], self.values["levels"]
        step = (upper - lower) / (n - 1)
        # Never past the range: (upper - lower) / (n - 1) * i can overshoot upper in its last digits.
        return [min(upper, lower + step * i) for i in range(n)]

    def decide(self, view: MarketView, state: dict[str, Any]) -> Decision:
        decision = Decision(state=dict(state))
        resting = {o.client_order_id for o in view.open_orders}

        def rests(tag: str) -> bool:
            return any(cid.endswith(tag) for cid in resting)

        levels = list(enumerate(self.levels()))
        buys = self._buys(view, [(i, level) for i, level in levels if level < view.price], rests)
        sells = self._sells(view, levels, rests)
        decision.intents.extend(sorted([*buys, *sells], key=lambda intent: intent.price or 0))
        return decision

    def _buys(
        self, view: MarketView, below: list[tuple[int, Decimal]], rests: Callable[[str], bool]
    ) -> list[OrderIntent]:
        """A buy on each level below the price, nearest first, as far as the free quote pays for."""
        amount, budget = self.values["order_amount"], view.quote_free
        buys = []
        for i, level in sorted(below, key=lambda pair: pair[1], reverse=True):
            tag = f"grid-{i}-buy"
            if rests(tag):
                continue
            if amount * level > budget:
                break
            budget -= amount * level
            buys.append(OrderIntent(view.symbol, "buy", "limit", amount, level, tag))
        return buys

    def _sells(
        self, view: MarketView, levels: list[tuple[int, Decimal]], rests: Callable[[str], bool]
    ) -> list[OrderIntent]:
        """What the bot holds, offered one level up: on the levels above both the price and what it paid,
        nearest first, in lots of at most the order amount, never more than it holds beyond resting sells."""
        amount = self.values["order_amount"]
        sellable = view.base_position - sum((o.amount for o in view.open_orders if o.side == "sell"), ZERO)
        floor = max(view.price, view.average_entry or view.price)
        sells = []
        for i, level in levels:
            if sellable <= 0:
                break
            tag = f"grid-{i}-sell"
            if level <= floor or rests(tag):
                continue
            lot = min(amount, sellable)
            sellable -= lot
            sells.append(OrderIntent(view.symbol, "sell", "limit", lot, level, tag))
        return sells
