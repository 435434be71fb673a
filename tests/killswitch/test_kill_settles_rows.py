"""After a kill no row of ours reads "open" where the exchange holds nothing: an order that filled just
before the kill (its worker never synced it) is written filled, not left open nor called cancelled."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from apps.killswitch.models import KillRun
from apps.killswitch.runner import kill_execute
from apps.killswitch.services import kill_request
from apps.strategies.base import OrderIntent
from apps.trading.gate import place_order
from apps.trading.models import Order
from apps.vault import client as vault
from tests.killswitch.test_engine import SYMBOL, Trader, open_orders, traders  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)  # the kill writes rows from its own threads


def test_an_order_filled_before_the_kill_is_written_filled_and_the_rest_cancelled(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    (trader,) = traders(1)
    price = Decimal(sandbox.admin.price(SYMBOL).price)
    near = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), price - 1, "near")
    far = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), Decimal("1000"), "far")
    filled = place_order(bot=trader.bot, intent=near, exchange=trader.exchange, price=price)
    resting = place_order(bot=trader.bot, intent=far, exchange=trader.exchange, price=price)
    sandbox.admin.set_price(SYMBOL, str(price - 100), hold=True)  # the near buy fills on the exchange
    try:
        assert len(open_orders(sandbox, trader)) == 1
        filled.refresh_from_db()
        assert filled.status == Order.Status.OPEN  # our row has not heard of the fill: no worker synced it

        run = kill_execute(run_id=kill_request(actor="system:test", reason="t").pk, process_vault=control_vault)
        assert run.status == KillRun.Status.DONE, run.problems
        assert open_orders(sandbox, trader) == []
        filled.refresh_from_db()
        resting.refresh_from_db()
        assert (filled.status, filled.filled) == (Order.Status.FILLED, Decimal("0.01"))
        assert resting.status == Order.Status.CANCELED
        assert not Order.objects.filter(bot=trader.bot, status__in=Order.OPEN_STATUSES).exists()
    finally:
        sandbox.admin.release_price(SYMBOL)
