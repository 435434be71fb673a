"""The dashboard and the bots list read every bot's PnL in one query: with a query per bot, a 100-bot dashboard ran
100 of them, and under a busy fleet each one waited its turn on the database."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.exchanges.models import ExchangeAccount
from apps.trading.models import Position
from apps.trading.selectors import bot_pnl, bot_rows
from tests.bots.test_fleet import make_bot
from tests.keys import Key

pytestmark = pytest.mark.django_db


def _queries(client: Any, path: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured.captured_queries)


def test_the_dashboard_and_the_bots_list_read_the_same_number_of_queries_for_3_or_30_bots(
    account: Callable[[str], tuple[ExchangeAccount, Key]], logged_in: Callable[[str], tuple[Any, Any]]
) -> None:
    acct, _ = account("Many bots")
    client, _ = logged_in("viewer")
    bots = [make_bot(acct, f"many-{i}", mode="paper") for i in range(3)]
    for bot in bots:
        Position.objects.create(bot=bot, symbol="BTC/USDT", realized_pnl=Decimal("1"), unrealized_pnl=Decimal("-3"))
    for path in ("/", "/bots/"):
        _queries(client, path)  # what a first request does once (the session, the halt row)
    few = {path: _queries(client, path) for path in ("/", "/bots/")}
    for i in range(3, 30):
        bot = make_bot(acct, f"many-{i}", mode="paper")
        Position.objects.create(bot=bot, symbol="BTC/USDT", realized_pnl=Decimal("2"))
    assert {path: _queries(client, path) for path in ("/", "/bots/")} == few
    # And each bot's figures are its own, as read one by one.
    rows = bot_rows()
    assert len(rows) == 30
    assert all(row["pnl"] == bot_pnl(row["bot"]) for row in rows)
    assert {row["pnl"]["total"] for row in rows} == {Decimal("-2"), Decimal("2")}
