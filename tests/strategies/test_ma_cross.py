"""The moving-average crossover's decide(): a buy on a cross up, a sell of the position on a cross down."""

from __future__ import annotations

import copy
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.strategies.base import MarketView
from apps.strategies.ma_cross import MaCrossStrategy
from tests.strategies.support import PROPERTY, SYMBOL, D, state_roundtrip, summary, tags, view

AMOUNT = D("0.01")
# Fast average of the last 2 closes, slow of the last 3.
MA = MaCrossStrategy(MaCrossStrategy.clean({"fast": 2, "slow": 3, "order_amount": "0.01"}))
BASE_FEE = D("0.001")


def closes(*values: int | str) -> tuple[Decimal, ...]:
    return tuple(D(v) for v in values)


# Before the last close both averages are 10 (not above); with 13 the fast one is 11.5, the slow 11.
CROSS_UP = closes(10, 10, 10, 10, 13)
# Before the last close fast 11.5 > slow 11; with 7 both are 10: no longer above.
CROSS_DOWN = closes(10, 10, 10, 13, 7)


def at(series: tuple[Decimal, ...], position: str | Decimal = "0") -> MarketView:
    return view(series[-1], closes=series, position=position)


def test_a_cross_up_buys_the_order_amount_at_market() -> None:
    decision = MA.decide(at(CROSS_UP), {})
    assert summary(decision.intents) == [("buy", "market", None, AMOUNT, "ma-up-0")]
    assert decision.intents[0].symbol == SYMBOL
    assert decision.state == {"crosses": 1} and decision.cancel == []


def test_a_cross_down_sells_the_whole_position_at_market() -> None:
    decision = MA.decide(at(CROSS_DOWN, position="0.037"), {"crosses": 1})
    assert summary(decision.intents) == [("sell", "market", None, D("0.037"), "ma-down-1")]
    assert decision.state == {"crosses": 2}


def test_a_cross_down_without_a_position_does_nothing_and_counts_no_cross() -> None:
    decision = MA.decide(at(CROSS_DOWN), {"crosses": 1})
    assert decision.intents == [] and decision.state == {"crosses": 1}


def test_a_cross_up_while_already_holding_the_order_amount_does_nothing() -> None:
    for held in ("0.01", "0.5"):
        decision = MA.decide(at(CROSS_UP, position=held), {"crosses": 4})
        assert decision.intents == [] and decision.state == {"crosses": 4}


def test_a_cross_up_while_holding_any_position_buys_nothing_more() -> None:
    # Long once, while flat: less than the order amount (a fee taken in the base asset) is long all the same.
    decision = MA.decide(at(CROSS_UP, position="0.004"), {})
    assert decision.intents == []


@pytest.mark.parametrize(
    "series",
    [
        closes(10, 10, 10, 10, 10),  # flat: equal averages are not "above"
        closes(10, 10, 10, 13, 14),  # stays above
        closes(10, 10, 10, 7, 6),  # stays below
        closes(10, 10, 10, 10, 7),  # falls from equal to below: no cross down (it was never above)
    ],
)
def test_without_a_cross_it_does_nothing_whatever_it_holds(series: tuple[Decimal, ...]) -> None:
    for held in ("0", "0.004", "0.01"):
        decision = MA.decide(at(series, position=held), {"crosses": 2})
        assert decision.intents == [] and decision.state == {"crosses": 2}


def test_with_fewer_closes_than_the_slow_window_plus_one_it_does_nothing() -> None:
    for n in range(4):  # 0 to 3 closes; slow + 1 = 4
        for series in (CROSS_UP, CROSS_DOWN, closes(30, 30, 20, 5, 5), closes(1, 1, 1, 5, 40)):
            for held in ("0", "0.5"):
                decision = MA.decide(view("13", closes=series[len(series) - n :], position=held), {"x": 1})
                assert decision.intents == [] and decision.state == {"x": 1}
    # Exactly slow + 1 closes is enough for the same cross.
    assert tags(MA.decide(at(CROSS_UP[-4:]), {}).intents) == ["ma-up-0"]
    assert tags(MA.decide(at(CROSS_DOWN[-4:], position="0.5"), {}).intents) == ["ma-down-0"]


def test_with_too_few_closes_for_the_default_windows_it_does_nothing() -> None:
    strategy = MaCrossStrategy(MaCrossStrategy.clean({}))  # 9 and 21
    series = closes(*([10] * 20), 30)  # 21 closes: one short
    assert strategy.decide(at(series), {}).intents == []
    assert tags(strategy.decide(at((D(10), *series)), {}).intents) == ["ma-up-0"]


def test_only_the_last_slow_plus_one_closes_matter() -> None:
    for older in ((), closes(1), closes(1000, 1, 5000, 3)):
        assert MA.decide(at(older + CROSS_UP), {}) == MA.decide(at(CROSS_UP), {})
        assert MA.decide(at(older + CROSS_DOWN, "0.01"), {}) == MA.decide(at(CROSS_DOWN, "0.01"), {})


def test_the_decision_follows_the_closes_not_the_view_price() -> None:
    assert tags(MA.decide(view("1", closes=CROSS_UP), {}).intents) == ["ma-up-0"]
    assert MA.decide(view("1000", closes=closes(10, 10, 10, 10, 10)), {}).intents == []


def test_it_keeps_state_it_does_not_know_and_leaves_its_inputs_untouched() -> None:
    state: dict[str, Any] = {"crosses": 3, "note": ["kept"]}
    market = at(CROSS_UP)
    before = copy.deepcopy((market, state))
    decision = MA.decide(market, state)
    assert decision.state == {"crosses": 4, "note": ["kept"]}
    assert (market, state) == before
    assert decision == MA.decide(market, state)


def test_a_retried_tick_proposes_the_same_tag() -> None:
    state = {"crosses": 6}
    assert tags(MA.decide(at(CROSS_UP), state).intents) == tags(MA.decide(at(CROSS_UP), state).intents) == ["ma-up-6"]


def test_over_a_price_series_it_fires_once_per_cross_and_not_again_until_the_next_one() -> None:
    # Each close is seen by two ticks in a row (ticks faster than candles); orders fill at once.
    prices = [10, 10, 10, 10, 13, 14, 15, 15, 12, 8, 7, 7, 9, 12, 12, 13, 9, 6]
    position, state = D("0"), dict[str, Any]()
    log: list[tuple[int, str]] = []
    for end in range(1, len(prices) + 1):
        series = closes(*prices[:end])
        for _ in range(2):
            decision = MA.decide(at(series, position=position), state)
            for intent in decision.intents:
                log.append((end, intent.tag))
                position = position + intent.amount if intent.side == "buy" else position - intent.amount
            state = state_roundtrip(decision.state)
    # Up at 13 (close 5: fast 11.5 > slow 11), down at 12 (close 9: 13.5 < 14), up at 9 (close 13:
    # 8 > 7.67), down at 9 (close 17: 11 < 11.33). Each once, although each close is seen twice.
    assert log == [(5, "ma-up-0"), (9, "ma-down-1"), (13, "ma-up-2"), (17, "ma-down-3")]
    assert state == {"crosses": 4} and position == 0


# --- Properties -----------------------------------------------------------------------------------


def _above(series: tuple[Decimal, ...], fast: int, slow: int) -> bool:
    # Exact rational arithmetic: an independent reading of "the fast average is above the slow one".
    return sum(map(Fraction, series[-fast:])) / fast > sum(map(Fraction, series[-slow:])) / slow


@st.composite
def cases(draw: st.DrawFn) -> tuple[MaCrossStrategy, MarketView, dict[str, Any]]:
    fast = draw(st.integers(min_value=2, max_value=6))
    slow = draw(st.integers(min_value=fast + 1, max_value=10))
    strategy = MaCrossStrategy(MaCrossStrategy.clean({"fast": fast, "slow": slow, "order_amount": "0.01"}))
    n = draw(st.integers(min_value=0, max_value=slow + 4))
    series = tuple(draw(st.lists(st.integers(min_value=90, max_value=110).map(D), min_size=n, max_size=n)))
    position = draw(st.sampled_from([D("0"), D("0.005"), D("0.01"), D("0.3")]))
    state = draw(st.fixed_dictionaries({}, optional={"crosses": st.integers(0, 100)}))
    return strategy, view("100", closes=series, position=position), state


@PROPERTY
@given(case=cases())
def test_it_buys_exactly_on_a_cross_up_and_sells_exactly_on_a_cross_down(
    case: tuple[MaCrossStrategy, MarketView, dict[str, Any]],
) -> None:
    strategy, market, state = case
    fast, slow = strategy.values["fast"], strategy.values["slow"]
    before = copy.deepcopy((market, state))
    decision = strategy.decide(market, state)
    assert (market, state) == before and decision == strategy.decide(market, state)
    assert decision.cancel == [] and len(decision.intents) <= 1
    crosses = int(state.get("crosses", 0))
    expected: list[tuple[str, str, Decimal | None, Decimal, str]] = []
    if len(market.closes) > slow:
        now, was = _above(market.closes, fast, slow), _above(market.closes[:-1], fast, slow)
        if now and not was and market.base_position <= 0:
            expected = [("buy", "market", None, AMOUNT, f"ma-up-{crosses}")]
        elif was and not now and market.base_position > 0:
            expected = [("sell", "market", None, market.base_position, f"ma-down-{crosses}")]
    assert summary(decision.intents) == expected
    assert decision.state.get("crosses", 0) == crosses + (1 if expected else 0)


# --- Found by these tests, fixed -----------------------------------------------------------------


def test_a_cross_up_seen_again_after_its_buy_filled_with_the_fee_in_base_buys_nothing_more() -> None:
    first = MA.decide(at(CROSS_UP), {})
    assert tags(first.intents) == ["ma-up-0"]
    held = AMOUNT * (1 - BASE_FEE)
    again = MA.decide(at(CROSS_UP, position=held), state_roundtrip(first.state))
    assert again.intents == []
