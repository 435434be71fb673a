from __future__ import annotations

from decimal import Decimal
from typing import Any

from apps.strategies.base import (
    AMOUNT_MAX,
    Decision,
    Footprint,
    MarketRules,
    MarketView,
    OrderIntent,
    Param,
    ParamError,
    Size,
    Strategy,
    smallest_amount,
)


class MaCrossStrategy(Strategy):
    """Moving-average crossover: buy when the fast average crosses above the slow one, sell on the way down."""

    key = "ma_cross"
    name = "Moving-average crossover"
    description = "Goes long when the fast moving average crosses above the slow one and flat when it crosses below."
    params = (
        Param("fast", "int", "Fast window", "Candles in the fast average.", 9, min=2, max=500),
        Param("slow", "int", "Slow window", "Candles in the slow average.", 21, min=3, max=1000),
        Param(
            "order_amount",
            "decimal",
            "Amount",
            "Base currency bought on a cross up.",
            Decimal("0.001"),
            min=Decimal("0.00000001"),
            max=AMOUNT_MAX,
            measure="base",
        ),
    )

    @classmethod
    def suggest(cls, price: Decimal, market: MarketRules | None) -> dict[str, Any]:
        values = cls.defaults()
        amount = max(values["order_amount"], smallest_amount(price, market))
        values["order_amount"] = cls.param("order_amount").bounded(amount)
        return values

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        if values["fast"] >= values["slow"]:
            raise ParamError("slow", "The slow window must be longer than the fast one.")

    @classmethod
    def footprint(cls, values: dict[str, Any]) -> Footprint:
        # One market buy of a base amount, valued at the market's price; long once, so that is the whole position.
        buy = Size("Crossover buy", base=values["order_amount"])
        return Footprint(param="order_amount", largest_order=buy, full_position=buy)

    @staticmethod
    def _average(values: tuple[Decimal, ...], window: int) -> Decimal:
        return sum(values[-window:], Decimal(0)) / window

    def decide(self, view: MarketView, state: dict[str, Any]) -> Decision:
        decision = Decision(state=dict(state))
        fast, slow = self.values["fast"], self.values["slow"]
        if len(view.closes) < slow + 1:
            return decision  # not enough history yet
        now_above = self._average(view.closes, fast) > self._average(view.closes, slow)
        before = view.closes[:-1]
        was_above = self._average(before, fast) > self._average(before, slow)
        crosses = int(state.get("crosses", 0))
        amount = self.values["order_amount"]
        # Long once, while flat: a fill whose fee was taken in the base asset leaves a little less than the
        # order amount, which is a position all the same.
        if now_above and not was_above and view.base_position <= 0 and amount * view.price <= view.quote_free:
            decision.state["crosses"] = crosses + 1
            decision.intents.append(OrderIntent(view.symbol, "buy", "market", amount, None, f"ma-up-{crosses}"))
        elif was_above and not now_above and view.base_position > 0:
            decision.state["crosses"] = crosses + 1
            decision.intents.append(
                OrderIntent(view.symbol, "sell", "market", view.base_position, None, f"ma-down-{crosses}")
            )
        return decision
