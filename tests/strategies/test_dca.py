"""DCA's decide(): a market buy of a fixed quote amount every N ticks, the whole position sold at the target."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from apps.strategies.base import Decision
from apps.strategies.dca import DcaStrategy
from apps.trading.ids import client_order_id
from tests.strategies.support import BOT_ID, PROPERTY, SYMBOL, D, state_roundtrip, summary, tags, view

# 50 quote every 3 ticks; sell everything 2 % above the average entry.
DCA = DcaStrategy(DcaStrategy.clean({"quote_per_buy": "50", "every_ticks": 3, "take_profit_pct": "2"}))


def dca(**raw: Any) -> DcaStrategy:
    return DcaStrategy(DcaStrategy.clean(raw))


def test_the_first_tick_buys_the_quote_amount_at_market() -> None:
    decision = DCA.decide(view("25000"), {})
    assert summary(decision.intents) == [("buy", "market", None, D("0.002"), "dca-buy-1")]
    assert decision.intents[0].symbol == SYMBOL
    assert decision.state == {"ticks": 1} and decision.cancel == []


def test_it_buys_on_the_first_tick_of_every_interval_and_counts_every_tick() -> None:
    state: dict[str, Any] = {}
    bought: list[str] = []
    for _ in range(10):
        decision = DCA.decide(view("25000"), state)
        bought += tags(decision.intents)
        assert decision.state["ticks"] == int(state.get("ticks", 0)) + 1
        state = state_roundtrip(decision.state)
    assert bought == ["dca-buy-1", "dca-buy-4", "dca-buy-7", "dca-buy-10"]
    assert state == {"ticks": 10}


def test_with_an_interval_of_one_it_buys_on_every_tick() -> None:
    strategy, state = dca(quote_per_buy="100", every_ticks=1), dict[str, Any]()
    bought: list[str] = []
    for _ in range(5):
        decision = strategy.decide(view("20000"), state)
        bought += tags(decision.intents)
        state = decision.state
    assert bought == [f"dca-buy-{n}" for n in range(1, 6)]


def test_the_amount_is_the_quote_amount_over_the_price_to_five_decimals() -> None:
    decision = DCA.decide(view("30000"), {})
    assert summary(decision.intents) == [("buy", "market", None, D("0.00167"), "dca-buy-1")]


def test_it_buys_nothing_when_the_quote_amount_buys_less_than_the_smallest_step() -> None:
    strategy = dca(quote_per_buy="1")
    decision = strategy.decide(view("1000000"), {})  # 0.000001, rounds to 0.00000
    assert decision.intents == [] and decision.state == {"ticks": 1}


def test_it_takes_profit_at_the_target_selling_the_whole_position() -> None:
    # Entry 25000, take profit 2 %: the target is 25500.
    below = DCA.decide(view("25499.99", position="0.006", entry="25000"), {"ticks": 1})
    assert [i.side for i in below.intents] == []  # tick 2 is not a buy tick either
    at = DCA.decide(view("25500", position="0.006", entry="25000"), {"ticks": 1})
    assert summary(at.intents) == [("sell", "market", None, D("0.006"), "dca-tp-0")]
    assert at.state == {"ticks": 2, "rounds": 1}
    above = DCA.decide(view("40000", position="0.006", entry="25000"), {"ticks": 1, "rounds": 4})
    assert summary(above.intents) == [("sell", "market", None, D("0.006"), "dca-tp-4")]
    assert above.state == {"ticks": 2, "rounds": 5}


def test_below_the_target_a_buy_tick_still_buys() -> None:
    decision = DCA.decide(view("25400", position="0.006", entry="25000"), {"ticks": 3})
    assert summary(decision.intents) == [("buy", "market", None, D("0.00197"), "dca-buy-4")]
    assert "rounds" not in decision.state


def test_a_take_profit_on_a_buy_tick_sells_and_does_not_buy() -> None:
    decision = DCA.decide(view("26000", position="0.006", entry="25000"), {"ticks": 3})
    assert tags(decision.intents) == ["dca-tp-0"]
    assert decision.state == {"ticks": 4, "rounds": 1}


def test_without_a_position_or_an_average_entry_it_never_sells() -> None:
    for position, entry in (("0", "25000"), ("0.006", None), ("0", None)):
        decision = DCA.decide(view("90000", position=position, entry=entry), {"ticks": 1})
        assert decision.intents == []


def test_fee_dust_left_after_a_take_profit_is_not_sold_and_buying_goes_on() -> None:
    # A take-profit sold what the exchange took; less than one buy step (0.00001) was left by the fees.
    decision = DCA.decide(view("90000", position="0.000004", entry="25000"), {"ticks": 3, "rounds": 1})
    assert summary(decision.intents) == [("buy", "market", None, D("0.00056"), "dca-buy-4")]
    assert decision.state == {"ticks": 4, "rounds": 1}


def test_it_keeps_state_it_does_not_know_and_never_cancels() -> None:
    state = {"ticks": 5, "rounds": 2, "note": "kept"}
    decision = DCA.decide(view("25000"), state)
    assert decision.state == {"ticks": 6, "rounds": 2, "note": "kept"}
    assert state == {"ticks": 5, "rounds": 2, "note": "kept"}
    assert decision.cancel == []


def test_a_retried_tick_proposes_the_same_tags_so_the_same_client_order_ids() -> None:
    # A tick that dies before storing its state runs again from the same state, in the same generation.
    for market, state in ((view("25000"), {"ticks": 3}), (view("26000", position="0.1", entry="25000"), {"rounds": 2})):
        first, retry = DCA.decide(market, state), DCA.decide(market, state)
        assert tags(first.intents) == tags(retry.intents) != []
        ids = [client_order_id(BOT_ID, t, 9) for t in tags(first.intents)]
        assert ids == [client_order_id(BOT_ID, t, 9) for t in tags(retry.intents)]


def test_over_a_sequence_of_ticks_it_accumulates_then_takes_profit_then_starts_again() -> None:
    strategy = dca(quote_per_buy="100", every_ticks=2, take_profit_pct="5")
    position, cost = D("0"), D("0")
    state: dict[str, Any] = {}
    log: list[str] = []
    for price in ("100", "98", "95", "97", "99", "101", "102", "100", "104", "110"):
        entry = cost / position if position else None
        decision: Decision = strategy.decide(view(price, position=position, entry=entry), state)
        for intent in decision.intents:  # market orders fill at once at the price
            log.append(intent.tag)
            if intent.side == "buy":
                position, cost = position + intent.amount, cost + intent.amount * D(price)
            else:
                assert intent.amount == position
                position, cost = D("0"), D("0")
        state = state_roundtrip(decision.state)
    # Buys on the odd ticks at 100, 95, 99 and 102 (average entry 98.93, target 103.88); 104 on tick 9
    # is above the target, so that tick sells instead of buying; tick 10 is not a buy tick.
    assert log == ["dca-buy-1", "dca-buy-3", "dca-buy-5", "dca-buy-7", "dca-tp-0"]
    assert state == {"ticks": 10, "rounds": 1} and position == 0


# --- Properties -----------------------------------------------------------------------------------


@st.composite
def cases(draw: st.DrawFn) -> tuple[DcaStrategy, Any, dict[str, Any]]:
    strategy = dca(
        quote_per_buy=draw(st.decimals(min_value=D("1"), max_value=D("100000"), places=2)),
        every_ticks=draw(st.integers(min_value=1, max_value=20)),
        take_profit_pct=draw(st.decimals(min_value=D("0.1"), max_value=D("50"), places=1)),
    )
    price = draw(st.decimals(min_value=D("0.0001"), max_value=D("1000000"), places=4).filter(lambda p: p > 0))
    position = draw(st.sampled_from([D("0"), D("0.5"), D("3")]))
    entry = draw(st.one_of(st.none(), st.decimals(min_value=D("0.0001"), max_value=D("1000000"), places=4)))
    state = draw(st.fixed_dictionaries({}, optional={"ticks": st.integers(0, 1000), "rounds": st.integers(0, 50)}))
    return strategy, view(price, position=position, entry=entry), state


@PROPERTY
@given(case=cases())
def test_it_proposes_at_most_one_market_order_and_counts_the_tick(
    case: tuple[DcaStrategy, Any, dict[str, Any]],
) -> None:
    strategy, market, state = case
    before = copy.deepcopy((market, state))
    decision = strategy.decide(market, state)
    assert (market, state) == before  # nothing passed in was changed
    assert decision == strategy.decide(market, state)  # and the same inputs give the same answer
    ticks, rounds = int(state.get("ticks", 0)) + 1, int(state.get("rounds", 0))
    assert decision.state["ticks"] == ticks and decision.cancel == []
    assert len(decision.intents) <= 1
    entry = market.average_entry
    target_hit = bool(
        market.base_position > 0 and entry and market.price >= entry * (1 + strategy.values["take_profit_pct"] / 100)
    )
    if target_hit:
        assert summary(decision.intents) == [("sell", "market", None, market.base_position, f"dca-tp-{rounds}")]
        assert decision.state.get("rounds") == rounds + 1
        return
    assert decision.state.get("rounds") == state.get("rounds")
    every = strategy.values["every_ticks"]
    if (ticks - 1) % every != 0:
        assert decision.intents == []
        return
    spend = strategy.values["quote_per_buy"]
    if decision.intents:
        (intent,) = decision.intents
        assert (intent.side, intent.type, intent.price, intent.tag) == ("buy", "market", None, f"dca-buy-{ticks}")
        assert intent.amount > 0 and intent.amount == intent.amount.quantize(D("0.00001"))
        # Within half a step of the quote amount's worth.
        assert abs(intent.amount * market.price - spend) <= D("0.000005") * market.price
    else:
        assert spend / market.price <= D("0.000005")  # too little to buy one step
