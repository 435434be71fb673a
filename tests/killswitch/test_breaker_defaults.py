"""The breakers' defaults leave a normal restart alone and still stop a runaway."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest

from apps.bots.models import Bot
from apps.killswitch.breakers import breakers_check
from apps.killswitch.models import BreakerRule
from apps.trading.models import Order

pytestmark = pytest.mark.django_db
Kind = BreakerRule.Kind


def _orders(bots: list[Bot], per_bot: int) -> None:
    # What a restart of the fleet places at once: every grid level of every bot, live, within seconds.
    Order.objects.bulk_create(
        Order(
            bot=bot,
            account=bot.account,
            symbol="BTC/USDT",
            side="buy",
            type="limit",
            amount=Decimal("0.001"),
            price=Decimal("50000"),
            notional=Decimal("50"),
            client_order_id=str(uuid.uuid4()),
            status="open",
            intent_tag=f"grid-{i}",
            paper=False,
        )
        for bot in bots
        for i in range(per_bot)
    )


def test_restarting_five_grid_bots_of_twenty_levels_trips_no_default_breaker(make_bot: Callable[..., Bot]) -> None:
    bots = [make_bot(desired_state="running") for _ in range(5)]
    _orders(bots, 20)
    assert breakers_check() == []
    assert not Bot.objects.filter(halted=True).exists()


def test_a_runaway_beyond_the_default_rate_still_halts_the_bots_that_placed_it(make_bot: Callable[..., Bot]) -> None:
    bots = [make_bot(desired_state="running") for _ in range(5)]
    _orders(bots, 121)  # 605 live orders within the minute
    opened = breakers_check()
    assert [t.kind for t in opened] == [Kind.ORDER_RATE]
    assert Bot.objects.filter(halted=True).count() == 5
    assert all(b.halt_kind == Bot.HaltKind.BREAKER for b in Bot.objects.all())
