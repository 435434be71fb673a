"""Each bot is judged by its own ledger, and a halt is a state an admin can clear, not a dead end.

Two bots share one sandbox account (as they often do): one buys and loses, the other holds
nothing. Only the loser halts. An admin clears its halt (refused while the loss still holds,
unless overridden) and it starts and trades again.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.bots.services import bot_start
from apps.core.exceptions import ApplicationError
from apps.killswitch.halt_clear import HaltStillHolds, bot_halt_clear
from apps.trading.ledger import ledger_for
from apps.trading.models import Position
from apps.trading.tick import tick_run
from tests.people import Person
from tests.trading.conftest import SYMBOL, Live

pytestmark = pytest.mark.django_db

# BTC at 60,000: the loser's grid rests buys of 0.01 at 55,000 and 50,000; the bystander's rest far below.
LOSER = {"lower": "50000", "upper": "65000", "levels": 4, "order_amount": "0.01"}
BYSTANDER = {"lower": "20000", "upper": "30000", "levels": 3, "order_amount": "0.001"}


@pytest.fixture
def pair(make_bot: Callable[..., Bot]) -> tuple[Bot, Bot]:
    loser = make_bot(params=LOSER, max_position_notional=Decimal("1300"), daily_loss_limit=Decimal("200"))
    bystander = make_bot(params=BYSTANDER, max_position_notional=Decimal("1300"), daily_loss_limit=Decimal("200"))
    return loser, bystander


def _crash(live: Live, sandbox: Any, loser: Bot, bystander: Bot) -> None:
    tick_run(bot=loser, exchange=live.exchange)
    tick_run(bot=bystander, exchange=live.exchange)
    # The account (10,000 USDT and 1 BTC) loses 20,000: the loser's own 0.02 BTC bought at 52,500 lose 250.80 with fees.
    sandbox.admin.set_price(SYMBOL, "40000", hold=True)
    tick_run(bot=loser, exchange=live.exchange)
    tick_run(bot=bystander, exchange=live.exchange)
    loser.refresh_from_db()
    bystander.refresh_from_db()


def test_two_bots_on_one_account_only_the_one_that_lost_halts(live: Live, sandbox: Any, pair: tuple[Bot, Bot]) -> None:
    loser, bystander = pair
    _crash(live, sandbox, loser, bystander)
    assert Position.objects.get(bot=loser, symbol=SYMBOL).base_quantity == Decimal("0.01998")  # 0.1% fee in BTC
    assert loser.halted and loser.halt_kind == Bot.HaltKind.BREAKER
    assert loser.halt_data["reason"] == "daily_loss_limit"
    assert (loser.halt_data["loss"], loser.halt_data["limit"], loser.halt_data["unit"]) == ("250.80", "200.00", "USDT")
    assert loser.halted_by and loser.halted_at is not None
    assert ledger_for(loser).last_equity == Decimal("1049.2")  # 1,300 basis - 250.80 unrealized (fees included)
    assert not bystander.halted and bystander.desired_state == Bot.Desired.RUNNING
    assert ledger_for(bystander).last_equity == Decimal("1300")


def test_an_admin_clears_a_breaker_halt_and_the_bot_trades_again(
    live: Live, sandbox: Any, pair: tuple[Bot, Bot], logged_in: Callable[[str], tuple[Client, Person]]
) -> None:
    loser, bystander = pair
    _crash(live, sandbox, loser, bystander)
    assert loser.halted
    with pytest.raises(ApplicationError):
        bot_start(bot=loser, actor="system:test")  # a halted bot cannot start

    operator, _ = logged_in("operator")
    assert operator.post(f"/bots/{loser.pk}/halt/clear/", {"reason": "x"}).status_code == 403
    admin, who = logged_in("admin")
    url = f"/bots/{loser.pk}/halt/clear/"
    assert admin.post(url, {"reason": "reviewed"})["Location"].startswith("/accounts/step-up/")
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})

    page = admin.get(f"/bots/{loser.pk}/").content.decode()
    assert "Halted: Circuit breaker" in page and "What halted it still holds" in page and "250.80" in page

    # The loss still holds: refused with the figures, nothing changed.
    refused = admin.post(url, {"reason": "reviewed"}, follow=True).content.decode()
    assert "still holds" in refused and "250.80" in refused
    loser.refresh_from_db()
    assert loser.halted and not AuditEntry.objects.filter(action="bot.halt_cleared").exists()

    for bad in ("", "   ", "bad\x00reason", "x" * 501):
        admin.post(url, {"reason": bad, "override": "on"})
        loser.refresh_from_db()
        assert loser.halted, repr(bad)

    admin.post(url, {"reason": "loss accepted, range moved", "override": "on"})
    loser.refresh_from_db()
    assert not loser.halted and loser.halt_kind == "" and loser.halt_data == {}
    assert loser.desired_state == Bot.Desired.STOPPED  # cleared, not started
    entry = AuditEntry.objects.get(action="bot.halt_cleared")
    assert (entry.actor, entry.otp_verified, entry.ip) == (who.user.username, True, "127.0.0.1")
    assert entry.data["previous"]["figures"]["loss"] == "250.80" and entry.data["overridden"]
    assert entry.data["loss_baseline_before"]["day_start_equity"] == "1300.000000000000"

    admin.post(f"/bots/{loser.pk}/start/")
    loser.refresh_from_db()
    assert loser.desired_state == Bot.Desired.RUNNING
    before = len(live.exchange_orders())
    result = tick_run(bot=loser, exchange=live.exchange)
    loser.refresh_from_db()
    assert not loser.halted and result.skipped == "" and result.placed
    assert len(live.exchange_orders()) > before  # it trades again


def test_clearing_is_refused_when_nothing_is_halted_and_twice_clears_once(
    pair: tuple[Bot, Bot], logged_in: Callable[[str], tuple[Client, Person]]
) -> None:
    loser, _ = pair
    _, who = logged_in("admin")
    with pytest.raises(ApplicationError, match="not halted"):
        bot_halt_clear(bot=loser, actor=who.user, reason="nothing to clear")
    Bot.objects.filter(pk=loser.pk).update(halted=True, halt_reason="Bot halted: by hand", halt_kind="emergency")
    assert bot_halt_clear(bot=loser, actor=who.user, reason="checked") == []
    with pytest.raises(ApplicationError, match="not halted"):
        bot_halt_clear(bot=loser, actor=who.user, reason="again")
    assert AuditEntry.objects.filter(action="bot.halt_cleared").count() == 1


def test_a_condition_that_holds_is_named_until_overridden(
    live: Live, sandbox: Any, pair: tuple[Bot, Bot], logged_in: Callable[[str], tuple[Client, Person]]
) -> None:
    loser, bystander = pair
    _crash(live, sandbox, loser, bystander)
    _, who = logged_in("admin")
    with pytest.raises(HaltStillHolds) as refused:
        bot_halt_clear(bot=loser, actor=who.user, reason="try")
    assert any("250.80" in c for c in refused.value.conditions)
    _, operator = logged_in("operator")
    with pytest.raises(ApplicationError, match="Only an admin"):
        bot_halt_clear(bot=loser, actor=operator.user, reason="try", override=True)
    loser.refresh_from_db()
    assert loser.halted
