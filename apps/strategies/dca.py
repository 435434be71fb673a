from __future__ import annotations

from decimal import ROUND_UP, Decimal
from typing import Any

from apps.strategies.base import (
    MIN_MARGIN,
    PRICE_MAX,
    ZERO,
    Decision,
    Footprint,
    MarketRules,
    MarketView,
    OrderIntent,
    Param,
    Size,
    Strategy,
    on_step,
)

# DCA buys are sized in whole quote units; decide() rounds the base amount to this.
BUY_AMOUNT_STEP = Decimal("0.00001")


class DcaStrategy(Strategy):
    """Dollar-cost averaging: buy a fixed quote amount every N ticks, take profit above the average entry."""

    key = "dca"
    name = "DCA with take-profit"
    description = "Buys a fixed amount on a schedule and sells the whole position once it is up by the take-profit."
    params = (
        Param(
            "quote_per_buy",
            "decimal",
            "Buy size",
            "Quote currency spent per buy.",
            Decimal("50"),
            min=Decimal("1"),
            max=PRICE_MAX,
            measure="quote",
        ),
        Param("every_ticks", "int", "Buy every", "Ticks between buys.", 10, min=1, max=100000),
        Param(
            "take_profit_pct",
            "decimal",
            "Take profit %",
            "Sell all when the price is this far above the average entry.",
            Decimal("2"),
            min=Decimal("0.1"),
            max=Decimal("1000"),
        ),
    )

    @classmethod
    def suggest(cls, price: Decimal, market: MarketRules | None) -> dict[str, Any]:
        # A buy worth what the market takes, with a margin (and at least one of decide()'s amount steps), in whole
        # quote units.
        values = cls.defaults()
        least = BUY_AMOUNT_STEP * price
        if market is not None:
            least = max(
                least, (market.min_notional or ZERO) * MIN_MARGIN, (market.min_amount or ZERO) * price * MIN_MARGIN
            )
        quote = max(values["quote_per_buy"], on_step(least, Decimal(1), ROUND_UP))
        values["quote_per_buy"] = cls.param("quote_per_buy").bounded(quote)
        return values

    @classmethod
    def footprint(cls, values: dict[str, Any]) -> Footprint:
        # Market buys of a fixed quote amount; the position grows buy by buy up to the max position, which is what
        # that limit is for: the first buy alone must fit it.
        buy = Size("DCA buy", quote=values["quote_per_buy"])
        return Footprint(param="quote_per_buy", largest_order=buy, full_position=buy)

    def decide(self, view: MarketView, state: dict[str, Any]) -> Decision:
        ticks = int(state.get("ticks", 0)) + 1
        decision = Decision(state={**state, "ticks": ticks})
        # A position smaller than one buy step is fee dust the exchange would not take as an order: selling it
        # would be refused at every tick, and the bot would never buy again. It is left alone.
        if view.base_position >= BUY_AMOUNT_STEP and view.average_entry:
            target = view.average_entry * (1 + self.values["take_profit_pct"] / 100)
            if view.price >= target:
                rounds = int(state.get("rounds", 0))
                decision.state["rounds"] = rounds + 1
                decision.intents.append(
                    OrderIntent(view.symbol, "sell", "market", view.base_position, None, f"dca-tp-{rounds}")
                )
                return decision
        if ticks % self.values["every_ticks"] == 1 or self.values["every_ticks"] == 1:
            amount = (self.values["quote_per_buy"] / view.price).quantize(BUY_AMOUNT_STEP)
            if amount > 0 and amount * view.price <= view.quote_free:
                decision.intents.append(OrderIntent(view.symbol, "buy", "market", amount, None, f"dca-buy-{ticks}"))
        return decision
