"""Values fitted to a market: what the bot form fills in once it knows the price and the exchange's order rules."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from apps.strategies import REGISTRY
from apps.strategies.dca import DcaStrategy
from apps.strategies.grid import GridStrategy
from apps.strategies.ma_cross import MaCrossStrategy
from tests.strategies.support import PROPERTY, D


@dataclass(frozen=True)
class Rules:
    min_amount: Decimal | None = Decimal("0.00001")
    min_notional: Decimal | None = Decimal("5")
    price_step: Decimal | None = Decimal("0.01")
    amount_step: Decimal | None = Decimal("0.00001")


def test_a_grid_spans_the_price_ten_percent_either_way_on_the_tick() -> None:
    values = GridStrategy.suggest(D("60512.345"), Rules())
    # Inward: 54461.1105 up to the tick, 66563.5795 down.
    assert (values["lower"], values["upper"]) == (D("54461.12"), D("66563.57"))
    assert values["levels"] == 10 and values["order_amount"] == D("0.001")  # 54 USDT at the bottom: the default fits


def test_a_size_below_the_market_minimum_is_raised_to_the_smallest_one_it_takes() -> None:
    # ETH at 3000: 0.001 ETH is 3 USDT (2.7 at the grid's bottom), under the 5 USDT minimum.
    eth = Rules(min_amount=D("0.0001"), amount_step=D("0.0001"))
    assert GridStrategy.suggest(D("3000"), eth)["order_amount"] == D("0.0021")  # 5.5 / 2700 = 0.00204 -> step up
    assert MaCrossStrategy.suggest(D("3000"), eth)["order_amount"] == D("0.0019")  # 5.5 / 3000 = 0.00183
    # A minimum order value above the DCA default: the buy is raised to it (with the margin), in whole units.
    assert DcaStrategy.suggest(D("3000"), Rules(min_notional=D("100")))["quote_per_buy"] == D("110")
    assert DcaStrategy.suggest(D("3000"), Rules())["quote_per_buy"] == D("50")


def test_without_market_rules_the_defaults_are_only_moved_to_the_price() -> None:
    values = GridStrategy.suggest(D("100"), None)
    assert (values["lower"], values["upper"], values["order_amount"]) == (D("90.0"), D("110.0"), D("0.001"))


prices = st.decimals(min_value=D("0.00000001"), max_value=D("100000000"), allow_nan=False, places=8)
steps = st.sampled_from([None, D("0.00000001"), D("0.01"), D("1")])


@PROPERTY
@given(price=prices, price_step=steps, amount_step=steps, min_notional=st.sampled_from([None, D("1"), D("10")]))
def test_every_suggestion_is_a_configuration_the_form_accepts(
    price: Decimal, price_step: Decimal | None, amount_step: Decimal | None, min_notional: Decimal | None
) -> None:
    rules = Rules(min_amount=None, min_notional=min_notional, price_step=price_step, amount_step=amount_step)
    for strategy in REGISTRY.values():
        suggested = strategy.suggest(price, rules)
        assert strategy.clean({k: str(v) for k, v in suggested.items()}) == suggested
