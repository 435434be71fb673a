from __future__ import annotations

from decimal import Decimal
from typing import Any

from apps.strategies.base import AMOUNT_MAX, PRICE_MAX, Decision, MarketView, OrderIntent, Param, ParamError, Strategy


class GridStrategy(Strategy):
    """Resting buy orders below the price and sells above it, on evenly spaced levels."""

    key = "grid"
    name = "Grid"
    description = "Buys at evenly spaced levels below the price and sells one level up, inside a price range."
    params = (
        Param(
            "lower",
            "decimal",
            "Lower price",
            "Bottom of the grid, in quote currency.",
            Decimal("20000"),
            min=Decimal("0.00000001"),
            max=PRICE_MAX,
        ),
        Param(
            "upper",
            "decimal",
            "Upper price",
            "Top of the grid, in quote currency.",
            Decimal("40000"),
            min=Decimal("0.00000001"),
            max=PRICE_MAX,
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
        ),
    )

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        if values["lower"] >= values["upper"]:
            raise ParamError("upper", "The upper price must be above the lower price.")

    def levels(self) -> list[Decimal]:
        lower, upper, n = self.values["lower"], self.values["upper"], self.values["levels"]
        step = (upper - lower) / (n - 1)
        return [lower + step * i for i in range(n)]

    def decide(self, view: MarketView, state: dict[str, Any]) -> Decision:
        decision = Decision(state=dict(state))
        resting = {o.client_order_id for o in view.open_orders}
        amount = self.values["order_amount"]
        for i, level in enumerate(self.levels()):
            if level < view.price:
                side, tag = "buy", f"grid-{i}-buy"
            elif level > view.price and view.base_position >= amount:
                side, tag = "sell", f"grid-{i}-sell"
            else:
                continue
            if not any(cid.endswith(tag) for cid in resting):
                decision.intents.append(OrderIntent(view.symbol, side, "limit", amount, level, tag))
        return decision
