"""The strategies' typed parameter schemas: parsing, bounds, cross-field rules, JSON round trip, registry."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.strategies import REGISTRY, get_strategy
from apps.strategies.base import Param, ParamError, Strategy
from apps.strategies.dca import DcaStrategy
from apps.strategies.grid import GridStrategy
from apps.strategies.ma_cross import MaCrossStrategy
from tests.strategies.support import PROPERTY

STRATEGIES: tuple[type[Strategy], ...] = (GridStrategy, DcaStrategy, MaCrossStrategy)
PARAMS = [pytest.param(cls, p, id=f"{cls.key}.{p.name}") for cls in STRATEGIES for p in cls.params]
BOUNDED = [
    pytest.param(cls, p, id=f"{cls.key}.{p.name}") for cls in STRATEGIES for p in cls.params if p.min is not None
]
DECIMALS = [
    pytest.param(cls, p, id=f"{cls.key}.{p.name}") for cls in STRATEGIES for p in cls.params if p.kind == "decimal"
]
INTS = [pytest.param(cls, p, id=f"{cls.key}.{p.name}") for cls in STRATEGIES for p in cls.params if p.kind == "int"]
NON_FINITE = ["NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", "-inf"]


def _refusal(cls: type[Strategy], raw: dict[str, Any]) -> ParamError:
    with pytest.raises(ParamError) as caught:
        cls.clean(raw)
    return caught.value


# --- The registry ---------------------------------------------------------------------------------


def test_the_registry_holds_each_strategy_under_its_own_key() -> None:
    expected = {"grid": GridStrategy, "dca": DcaStrategy, "ma_cross": MaCrossStrategy}
    assert expected == REGISTRY
    for key, cls in REGISTRY.items():
        assert get_strategy(key) is cls and cls.key == key
        assert cls.name and cls.description and cls.params


def test_it_refuses_an_unknown_strategy_key_by_name() -> None:
    with pytest.raises(KeyError, match="unknown strategy 'martingale'"):
        get_strategy("martingale")


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.key)
def test_parameter_names_are_unique_and_every_default_is_within_its_bounds(cls: type[Strategy]) -> None:
    names = [p.name for p in cls.params]
    assert len(names) == len(set(names))
    for p in cls.params:
        assert p.kind in ("decimal", "int", "choice")
        assert p.label and p.help
        assert p.parse(p.default) == p.default


# --- clean() and to_json() ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.key)
def test_clean_fills_missing_values_with_the_defaults_and_drops_unknown_keys(cls: type[Strategy]) -> None:
    assert cls.clean({}) == cls.defaults()
    assert cls.clean({"leverage": "100", "__class__": "x"}) == cls.defaults()
    assert set(cls.clean({})) == {p.name for p in cls.params}


def test_clean_parses_form_strings_into_typed_values() -> None:
    values = GridStrategy.clean({"lower": "100.50", "upper": "200", "levels": "5", "order_amount": "0.25"})
    assert values == {"lower": Decimal("100.50"), "upper": Decimal("200"), "levels": 5, "order_amount": Decimal("0.25")}
    assert isinstance(values["levels"], int) and isinstance(values["lower"], Decimal)


@pytest.mark.parametrize("cls", STRATEGIES, ids=lambda c: c.key)
def test_to_json_gives_strings_for_decimals_and_cleans_back_to_the_same_values(cls: type[Strategy]) -> None:
    values = cls.clean({})
    stored = cls.to_json(values)
    assert set(stored) == set(values)
    for p in cls.params:
        expected_type = str if p.kind == "decimal" else (int if p.kind == "int" else str)
        assert type(stored[p.name]) is expected_type
    # As the bot's JSON column stores it and hands it back.
    assert cls.clean(json.loads(json.dumps(stored))) == values


def test_to_json_keeps_every_digit_of_a_decimal() -> None:
    values = GridStrategy.clean({"lower": "0.00000001", "upper": "999999999.12345678", "order_amount": "0.1"})
    stored = GridStrategy.to_json(values)
    assert isinstance(stored["lower"], str) and Decimal(stored["lower"]) == Decimal("0.00000001")
    assert stored["upper"] == "999999999.12345678" and stored["order_amount"] == "0.1"
    assert GridStrategy.clean(stored) == values


@st.composite
def valid_values(draw: st.DrawFn, cls: type[Strategy]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for p in cls.params:
        if p.kind == "int":
            raw[p.name] = draw(st.integers(min_value=int(p.min or 0), max_value=int(p.max or 10**6)))
        else:
            low, high = Decimal(p.min or 0), Decimal(p.max or 10**6)
            raw[p.name] = draw(st.decimals(min_value=low, max_value=high, places=8))
    return raw


@PROPERTY
@given(data=st.data())
def test_any_accepted_values_survive_the_json_round_trip(data: st.DataObject) -> None:
    cls = data.draw(st.sampled_from(STRATEGIES))
    raw = data.draw(valid_values(cls))
    try:
        values = cls.clean(raw)
    except ParamError as exc:
        # Only the cross-field rules may refuse values drawn inside every bound.
        assert (cls, exc.field) in ((GridStrategy, "upper"), (MaCrossStrategy, "slow"))
        return
    stored = json.loads(json.dumps(cls.to_json(values)))
    assert cls.clean(stored) == values
    assert cls.to_json(cls.clean(stored)) == stored


# --- Bounds, numbers, finiteness ------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "param"), BOUNDED)
def test_it_refuses_a_value_below_the_minimum_naming_the_field(cls: type[Strategy], param: Param) -> None:
    assert param.min is not None
    below = param.min - 1 if param.kind == "int" else param.min - Decimal("0.00000001")
    error = _refusal(cls, {param.name: str(below)})
    assert error.field == param.name
    assert error.message == f"Must be at least {param.min}."
    assert param.parse(str(param.min)) == param.min  # the bound itself is allowed


@pytest.mark.parametrize(("cls", "param"), BOUNDED)
def test_it_refuses_a_value_above_the_maximum_naming_the_field(cls: type[Strategy], param: Param) -> None:
    assert param.max is not None
    above = param.max + 1 if param.kind == "int" else param.max + Decimal("0.00000001")
    error = _refusal(cls, {param.name: str(above)})
    assert error.field == param.name
    assert error.message == f"Must be at most {param.max}."
    assert param.parse(str(param.max)) == param.max


@pytest.mark.parametrize(("cls", "param"), PARAMS)
@pytest.mark.parametrize("raw", ["", "abc", "1,5", "12abc", "0x10", None, "--1", "1..2"])
def test_it_refuses_what_is_not_a_number_naming_the_field(cls: type[Strategy], param: Param, raw: Any) -> None:
    error = _refusal(cls, {param.name: raw})
    assert error.field == param.name and error.message == "Enter a number."
    assert str(error) == "Enter a number." and isinstance(error, ValueError)


@pytest.mark.parametrize(("cls", "param"), DECIMALS)
@pytest.mark.parametrize("raw", NON_FINITE)
def test_it_refuses_a_non_finite_decimal_naming_the_field(cls: type[Strategy], param: Param, raw: str) -> None:
    error = _refusal(cls, {param.name: raw})
    assert error.field == param.name and error.message == "Enter a finite number."


@pytest.mark.parametrize(("cls", "param"), INTS)
@pytest.mark.parametrize("raw", [*NON_FINITE, "2.5", "0.1", 2.5])
def test_it_refuses_a_non_integer_for_a_whole_number_field(cls: type[Strategy], param: Param, raw: Any) -> None:
    error = _refusal(cls, {param.name: raw})
    assert error.field == param.name and error.message == "Enter a number."


@PROPERTY
@given(data=st.data())
def test_a_bounded_parameter_accepts_exactly_the_values_within_its_bounds(data: st.DataObject) -> None:
    param = data.draw(st.sampled_from([p for c in STRATEGIES for p in c.params]))
    assert param.min is not None and param.max is not None
    if param.kind == "int":
        value: Decimal | int = data.draw(st.integers(min_value=int(param.min) - 1000, max_value=int(param.max) + 1000))
    else:
        value = data.draw(st.decimals(min_value=Decimal(param.min) - 10, max_value=Decimal(param.max) * 2, places=9))
    if param.min <= value <= param.max:
        assert param.parse(str(value)) == value
    else:
        with pytest.raises(ParamError) as caught:
            param.parse(str(value))
        assert caught.value.field == param.name


def test_clean_reports_the_first_bad_field_in_schema_order() -> None:
    error = _refusal(DcaStrategy, {"take_profit_pct": "0", "quote_per_buy": "abc", "every_ticks": "0"})
    assert error.field == "quote_per_buy"


def test_a_choice_parameter_accepts_only_its_choices() -> None:
    side = Param("side", "choice", "Side", "Which side to trade.", "buy", choices=("buy", "sell"))
    assert side.parse("sell") == "sell" and side.parse("buy") == "buy"
    for raw in ("hold", "BUY", "", None, 1):
        with pytest.raises(ParamError) as caught:
            side.parse(raw)
        assert caught.value.field == "side" and caught.value.message == "Choose one of: buy, sell."


# --- Cross-field rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(("lower", "upper"), [("30000", "30000"), ("40000", "20000"), ("30000.00000001", "30000")])
def test_the_grid_refuses_an_upper_price_not_above_the_lower_one(lower: str, upper: str) -> None:
    error = _refusal(GridStrategy, {"lower": lower, "upper": upper})
    assert error.field == "upper"
    assert error.message == "The upper price must be above the lower price."


def test_the_grid_accepts_the_narrowest_range() -> None:
    values = GridStrategy.clean({"lower": "30000", "upper": "30000.00000001", "levels": 2})
    assert GridStrategy(values).levels() == [Decimal("30000"), Decimal("30000.00000001")]


@pytest.mark.parametrize(("fast", "slow"), [("21", "21"), ("30", "21"), ("500", "3")])
def test_the_ma_cross_refuses_a_slow_window_not_longer_than_the_fast_one(fast: str, slow: str) -> None:
    error = _refusal(MaCrossStrategy, {"fast": fast, "slow": slow})
    assert error.field == "slow"
    assert error.message == "The slow window must be longer than the fast one."


def test_the_ma_cross_accepts_a_slow_window_one_longer_than_the_fast_one() -> None:
    assert MaCrossStrategy.clean({"fast": "2", "slow": "3"})["slow"] == 3


def test_dca_has_no_cross_field_rule_beyond_its_bounds() -> None:
    extreme = {"quote_per_buy": "1", "every_ticks": "100000", "take_profit_pct": "1000"}
    assert DcaStrategy.clean(extreme) == {
        "quote_per_buy": Decimal("1"),
        "every_ticks": 100000,
        "take_profit_pct": Decimal("1000"),
    }
