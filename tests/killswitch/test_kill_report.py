"""What a kill reports (issue 15): paper and live bots both killed and counted, cancellations written and
announced by the kill itself, an unreachable account reported as unknown (never "0 open"), archived bots left
out, and the duration from the click to verified with the workers' stop as its own figure."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.alerts.models import Alert
from apps.bots.models import Bot
from apps.events.models import Event
from apps.killswitch.models import KillRun
from apps.killswitch.report import result_line, run_state
from apps.killswitch.runner import kill_execute
from apps.killswitch.services import kill_request
from apps.strategies.base import OrderIntent
from apps.trading.gate import place_order
from apps.trading.models import Order
from apps.trading.paper import public_exchange
from apps.vault import client as vault
from launcher.embedded import free_port
from tests.harness import Harness
from tests.killswitch.test_engine import SYMBOL, Trader, open_orders, rest_orders, traders  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


def paper_bot(trader: Trader, name: str) -> Bot:
    """A running paper bot on the trader's account (a paper bot only reads the exchange's public data)."""
    return Bot.objects.create(
        name=name,
        account=trader.bot.account,
        strategy="grid",
        params={"lower": "55000", "upper": "65000", "levels": 5, "order_amount": "0.001"},
        symbols=[SYMBOL],
        mode=Bot.Mode.PAPER,
        max_order_notional=Decimal("1000"),
        max_position_notional=Decimal("5000"),
        max_open_orders=50,
        max_orders_per_minute=100,
        daily_loss_limit=Decimal("100000"),
        max_drawdown_pct=Decimal("90"),
        desired_state=Bot.Desired.RUNNING,
    )


def rest_through_gate(bot: Bot, exchange: Any, n: int) -> list[Order]:
    """n resting buys far below the price, placed as the bot's worker places them: through the order gate."""
    orders = []
    for i in range(n):
        intent = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), Decimal("1000") + i, f"rest-{i}")
        orders.append(place_order(bot=bot, intent=intent, exchange=exchange, price=Decimal("60000")))
    return orders


def test_a_kill_cancels_paper_and_live_orders_writes_and_announces_them_and_counts_both(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    team = traders(2)
    live_orders = [o for t in team for o in rest_through_gate(t.bot, t.exchange, 3)]
    assert all(o.status == Order.Status.OPEN and not o.paper for o in live_orders)
    papers = [paper_bot(team[0], "paper one"), paper_bot(team[1], "paper two")]
    paper_orders = [o for b in papers for o in rest_through_gate(b, public_exchange(bot=b), 2)]
    assert all(o.status == Order.Status.OPEN and o.paper for o in paper_orders)
    seq_before = Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0

    run = kill_request(actor="system:test", reason="paper and live")
    assert sorted(run.bots_stopped) == sorted([t.bot.pk for t in team] + [b.pk for b in papers])
    run = kill_execute(run_id=run.pk, process_vault=control_vault)

    assert run.status == KillRun.Status.DONE, run.problems
    assert (run.orders_cancelled, run.paper_orders_cancelled, run.orders_still_open) == (10, 4, 0)
    assert not run.open_unknown and run.still_open_text == "0"
    # Zero open orders anywhere: on the exchange, and among the paper bots' simulated orders.
    assert all(open_orders(sandbox, t) == [] for t in team)
    assert not Order.objects.filter(status__in=Order.OPEN_STATUSES).exists()
    # Written cancelled by the kill itself (no sync ran in this test) and announced on the live feed.
    assert set(Order.objects.values_list("status", flat=True)) == {Order.Status.CANCELED}
    announced = Event.objects.filter(seq__gt=seq_before, kind="order_update", payload__status="canceled")
    assert sorted(announced.values_list("payload__id", flat=True)) == sorted(o.pk for o in live_orders + paper_orders)
    # The paper bots are stopped like the live ones, and the report says what was done to them.
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {Bot.Desired.STOPPED}
    paper_step = next(s for s in run.steps if s["name"] == "paper")
    assert paper_step["detail"].startswith("4 simulated order(s) cancelled for 2 paper bot(s)")
    assert "paper orders: 0 open" in next(s["detail"] for s in run.steps if s["name"] == "verify")
    # The feed's line names the result.
    finished = Event.objects.filter(kind="kill_switch", payload__run=run.pk, payload__stage="finished").get()
    assert finished.payload["message"] == f"Kill switch {result_line(run)}"
    assert result_line(run).startswith("done in ") and "10 orders cancelled (4 paper), 0 open" in result_line(run)


def test_the_duration_is_from_the_click_to_verified_and_the_workers_stop_is_its_own_figure(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 2)
    run = kill_execute(run_id=kill_request(actor="system:test", reason="t").pk, process_vault=control_vault)
    verify = next(s for s in run.steps if s["name"] == "verify")
    stop = next(s for s in run.steps if s["name"] == "stop")
    assert run.duration_ms == verify["at_ms"]
    assert run.finished_at is not None and run.duration_ms is not None
    assert run.duration_ms <= int((run.finished_at - run.created_at).total_seconds() * 1000)
    assert run.workers_stopped_ms == stop["at_ms"]
    state = run_state(run)
    assert state["duration_ms"] == verify["at_ms"] and state["workers_stopped_ms"] == stop["at_ms"]
    assert state["finished"] and state["status"] == "done"


def test_archived_bots_and_accounts_only_they_use_are_left_out_of_a_kill(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    kept, archived = traders(2)
    rest_orders([kept, archived], 2)
    Bot.objects.filter(pk=archived.bot.pk).update(desired_state=Bot.Desired.STOPPED, archived_at=timezone.now())
    run = kill_execute(run_id=kill_request(actor="system:test", reason="t").pk, process_vault=control_vault)
    assert run.status == KillRun.Status.DONE, run.problems
    assert open_orders(sandbox, kept) == []
    # Its account was not visited: the orders placed behind the console's back are still there.
    assert len(open_orders(sandbox, archived)) == 2
    assert list(run.balances_after) == [str(kept.bot.account_id)]
    assert run.orders_cancelled == 2


def test_an_account_used_by_an_archived_bot_and_a_live_one_is_visited(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    (trader,) = traders(1)
    old = paper_bot(trader, "old")
    Bot.objects.filter(pk=old.pk).update(mode=Bot.Mode.LIVE, desired_state="stopped", archived_at=timezone.now())
    rest_orders([trader], 1)
    run = kill_execute(run_id=kill_request(actor="system:test", reason="t").pk, process_vault=control_vault)
    assert run.status == KillRun.Status.DONE and run.orders_cancelled == 1 and open_orders(sandbox, trader) == []
    assert old.pk not in run.bots_stopped


def test_an_unreachable_account_is_unknown_the_run_fails_an_alert_fires_and_the_command_exits_non_zero(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    services: Harness,
    settings: Any,
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 2)
    settings.VAULT_TOKEN = services.tokens["control"].token
    settings.VAULT_ADDR = services.vault_addr
    # The shell's command as `make run` had it before: the sandbox's address unknown to this process.
    settings.SANDBOX_URL = ""
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("killswitch", "--reason", "sandbox not found", stdout=out, stderr=out)
    assert exited.value.code == 1, out.getvalue()
    text = out.getvalue()
    assert "Orders still open: unknown" in text and "Orders still open: 0" not in text
    assert "SANDBOX_URL is not set" in text and f"NOT REACHED: {trader.bot.account.label}" in text
    run = KillRun.objects.get()
    assert run.status == KillRun.Status.FAILED and run.open_unknown
    info = run.balances_after[str(trader.bot.account_id)]
    assert info["reached"] is False and info["still_open"] is None
    assert any("not verified: its open orders are unknown" in p for p in run.problems)
    alert = Alert.objects.get(kind="kill_switch")
    assert alert.severity == Alert.Severity.CRITICAL and "unknown" in alert.message
    assert result_line(run).startswith("failed in ") and "open orders unknown" in result_line(run)
    assert len(open_orders(sandbox, trader)) == 2  # truly not reached: nothing was cancelled


def test_an_account_whose_exchange_does_not_listen_is_unknown_too(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
    settings: Any,
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 1)
    settings.SANDBOX_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.KILL_CANCEL_PATIENCE_S = 1  # how long the kill asks again before it gives up on the account
    run = kill_execute(run_id=kill_request(actor="system:test", reason="t").pk, process_vault=control_vault)
    assert run.status == KillRun.Status.FAILED and run.open_unknown
    assert run.still_open_text.startswith("unknown")
    assert run.balances_after[str(trader.bot.account_id)]["reached"] is False
