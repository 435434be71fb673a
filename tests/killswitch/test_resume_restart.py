"""Resume after a global kill, restarting the bots it stopped (issue 15, item 7): each restart is a normal start
(bot_start: its checks, its audit entry), one bot can be left out, a bot that may not start is reported, and a
press meeting a resume-with-restart never leaves a bot running under a halt."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from apps.audit.models import AuditEntry
from apps.bots.halts import global_halt_active
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.exchanges.models import ExchangeAccount
from apps.killswitch.models import KillRun
from apps.killswitch.runner import kill_execute
from apps.killswitch.selectors import bots_to_restart
from apps.killswitch.services import ResumeRefused, kill_request, trading_resume
from apps.strategies.base import OrderIntent
from apps.trading.gate import OrderRefused, place_order
from apps.vault import client as vault
from tests.killswitch.test_concurrency import at_once
from tests.killswitch.test_engine import SYMBOL, Trader, open_orders, traders  # noqa: F401 - fixture
from tests.people import make_person

pytestmark = pytest.mark.django_db(transaction=True)


def killed(team: list[Trader], control_vault: vault.ProcessVault) -> KillRun:
    run = kill_execute(run_id=kill_request(actor="system:test", reason="drill").pk, process_vault=control_vault)
    assert run.status == KillRun.Status.DONE, run.problems
    return run


def order(trader: Trader, tag: str) -> Any:
    intent = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), Decimal("1000"), tag)
    return place_order(bot=Bot.objects.get(pk=trader.bot.pk), intent=intent, exchange=trader.exchange, price=None)


def test_resume_restarts_the_bots_the_kill_stopped_and_they_place_orders_again(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    team = traders(3)
    idle = team[2].bot
    Bot.objects.filter(pk=idle.pk).update(desired_state=Bot.Desired.STOPPED)  # not running when the kill came
    run = killed(team, control_vault)
    assert sorted(run.bots_stopped) == sorted([team[0].bot.pk, team[1].bot.pk])
    assert [b.pk for b in bots_to_restart()] == sorted(run.bots_stopped, key=lambda pk: Bot.objects.get(pk=pk).name)

    admin = make_person("ada", "admin").user
    outcome = trading_resume(actor=admin, reason="drill over", restart=set(run.bots_stopped))
    assert not global_halt_active()
    assert sorted(b.pk for b in outcome.started) == sorted(run.bots_stopped) and outcome.refused == []
    states = dict(Bot.objects.values_list("pk", "desired_state"))
    assert states == {team[0].bot.pk: "running", team[1].bot.pk: "running", idle.pk: "stopped"}
    for bot_id in run.bots_stopped:  # each restart is a start, audited as one
        assert AuditEntry.objects.filter(action="bot.start_requested", target_id=str(bot_id), actor="ada").exists()
    resumed = AuditEntry.objects.get(action="killswitch.resumed")
    assert sorted(resumed.data["restarted"]) == sorted(run.bots_stopped) and resumed.data["not_restarted"] == {}

    # The same bots trade again: their orders reach the exchange; the bot that was idle stays stopped.
    for i, trader in enumerate(team[:2]):
        assert order(trader, f"again-{i}").status == "open"
        assert len(open_orders(sandbox, trader)) == 1
    with pytest.raises(OrderRefused):
        order(team[2], "idle")
    assert open_orders(sandbox, team[2]) == []
    assert bots_to_restart() == []  # nothing halted: nothing to offer


def test_a_bot_left_unchecked_stays_stopped(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    team = traders(2)
    run = killed(team, control_vault)
    admin = make_person("ada", "admin").user
    outcome = trading_resume(actor=admin, reason="one only", restart={team[0].bot.pk})
    assert [b.pk for b in outcome.started] == [team[0].bot.pk]
    assert Bot.objects.get(pk=team[0].bot.pk).desired_state == "running"
    assert Bot.objects.get(pk=team[1].bot.pk).desired_state == "stopped"
    assert sorted(AuditEntry.objects.get(action="killswitch.resumed").data["offered"]) == sorted(run.bots_stopped)
    with pytest.raises(OrderRefused):
        order(team[1], "unchecked")
    assert not AuditEntry.objects.filter(action="bot.start_requested", target_id=str(team[1].bot.pk)).exists()


def test_a_bot_that_may_not_start_is_reported_and_the_others_start(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    team = traders(2)
    run = killed(team, control_vault)
    # The key of the second bot failed its last check since: bot_start refuses a live start on it.
    ExchangeAccount.objects.filter(pk=team[1].bot.account_id).update(last_check_ok=False)
    admin = make_person("ada", "admin").user
    outcome = trading_resume(actor=admin, reason="partly", restart=set(run.bots_stopped))
    assert [b.pk for b in outcome.started] == [team[0].bot.pk]
    assert [(b.pk, "failed its last check" in why) for b, why in outcome.refused] == [(team[1].bot.pk, True)]
    assert not global_halt_active()
    assert Bot.objects.get(pk=team[1].bot.pk).desired_state == "stopped"
    resumed = AuditEntry.objects.get(action="killswitch.resumed")
    assert list(resumed.data["not_restarted"]) == [str(team[1].bot.pk)]


def test_a_bot_the_kill_did_not_stop_cannot_be_restarted_from_the_resume_and_nothing_changes(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    team = traders(2)
    Bot.objects.filter(pk=team[1].bot.pk).update(desired_state=Bot.Desired.STOPPED)
    killed(team, control_vault)
    admin = make_person("ada", "admin").user
    with pytest.raises(ApplicationError, match="not stopped by this halt"):
        trading_resume(actor=admin, reason="sneak", restart={team[0].bot.pk, team[1].bot.pk})
    assert global_halt_active()
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {"stopped"}
    assert not AuditEntry.objects.filter(action__in=["killswitch.resumed", "bot.start_requested"]).exists()


def test_a_press_meeting_a_resume_with_restart_never_leaves_a_bot_running_under_a_halt(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    team = traders(3)
    ids = {t.bot.pk for t in team}
    killed(team, control_vault)
    admin = make_person("ada", "admin").user
    seen: set[str] = set()
    for i in range(6):
        press, resume = at_once(
            lambda: kill_request(actor="system:test", reason=f"press {i}"),  # noqa: B023
            lambda: trading_resume(actor=admin, reason=f"resume {i}", restart=ids),  # noqa: B023
        )
        assert press.error is None, press.error
        states = set(Bot.objects.values_list("desired_state", flat=True))
        # The press always lands: halted, and every bot stopped, whichever went first.
        assert global_halt_active() and states == {"stopped"}, (i, states)
        if resume.error is None:
            seen.add("resume first")  # its bots started, then the press stopped them again
            assert {b.pk for b in resume.value.started} == ids
        else:
            seen.add("press first")
            assert isinstance(resume.error, ResumeRefused) and "in progress" in resume.error.message
        run = press.value
        assert set(KillRun.objects.get(pk=run.pk).bots_stopped) == (ids if resume.error is None else set())
        kill_execute(run_id=run.pk, process_vault=control_vault)
    print(f"interleavings seen: {sorted(seen)}")
    # Every bot any resume started was stopped again by the press that followed it: none runs under the halt.
    assert not Bot.objects.filter(desired_state="running").exists() and global_halt_active()
