"""The kill switch against the real sandbox exchange and the real OpenBao: every order gone, fast."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from apps.alerts.models import Alert
from apps.audit.models import AuditEntry
from apps.bots.halts import global_halt_active
from apps.bots.models import Bot
from apps.core.workers import consumes_control_queue
from apps.exchanges import port
from apps.exchanges.services import exchange_account_create
from apps.killswitch import revoke
from apps.killswitch.models import KillRun
from apps.killswitch.runner import kill_execute, kill_pending
from apps.killswitch.services import kill_press, kill_request
from apps.killswitch.tasks import _poll_forever
from apps.strategies.base import OrderIntent
from apps.trading.gate import OrderRefused, place_order
from apps.trading.models import Order
from apps.vault import client as vault
from tests.harness import Harness
from tests.keys import Key
from tests.processes import process_env

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SYMBOL = "BTC/USDT"
STEPS = ["revoke", "stop", "purge", "cancel", "verify", "balances"]
_names = itertools.count(1)


@dataclass
class Trader:
    key: Key
    bot: Bot
    raw: Any  # the key as a plain ccxt client: orders placed behind the console's back
    exchange: port.Exchange  # the key through the port, as the bot's worker holds it


@pytest.fixture
def traders(new_key: Callable[..., Key], pinned_price: None, sandbox: Any) -> Callable[[int], list[Trader]]:
    def make(n: int) -> list[Trader]:
        made = []
        for _ in range(n):
            key = new_key()
            account, _ = exchange_account_create(
                label=f"kill-{key.api_key[-8:]}",
                exchange_id="sandbox",
                credentials=key.form(),
                attested_no_withdrawals=False,
                actor="system:test",
            )
            bot = Bot.objects.create(
                name=f"kill-bot-{next(_names)}-{key.api_key[-6:]}",
                account=account,
                strategy="grid",
                params={"lower": "55000", "upper": "65000", "levels": 5, "order_amount": "0.001"},
                symbols=[SYMBOL],
                mode=Bot.Mode.LIVE,
                max_order_notional=Decimal("1000"),
                max_position_notional=Decimal("5000"),
                max_open_orders=50,
                max_orders_per_minute=100,
                daily_loss_limit=Decimal("100000"),
                max_drawdown_pct=Decimal("90"),
                desired_state=Bot.Desired.RUNNING,
            )
            made.append(Trader(key, bot, key.raw_ccxt(sandbox.url), key.exchange()))
        return made

    return make


def rest_orders(traders: list[Trader], n: int) -> None:
    """n resting buys per key, far below the price, placed directly on the sandbox (keys in parallel)."""

    def place(trader: Trader) -> None:
        for _ in range(n):
            trader.raw.create_order(SYMBOL, "limit", "buy", 0.01, 1000)

    with ThreadPoolExecutor(len(traders)) as pool:
        list(pool.map(place, traders))


def open_orders(sandbox: Any, trader: Trader) -> list[dict[str, Any]]:
    return list(sandbox.admin.open_orders(trader.key.api_key))


def test_a_kill_cancels_every_order_on_five_accounts_and_the_gate_refuses_all(
    sandbox: Any, traders: Callable[[int], list[Trader]], control_vault: vault.ProcessVault
) -> None:
    team = traders(5)
    rest_orders(team, 20)
    assert all(len(open_orders(sandbox, t)) == 20 for t in team)

    run = kill_request(actor="system:test", reason="test")
    assert global_halt_active()
    run = kill_execute(run_id=run.pk, process_vault=control_vault)

    assert run.started_at is not None
    queued_ms = int((run.started_at - run.created_at).total_seconds() * 1000)
    steps = [(s["name"], s["ms"]) for s in run.steps]
    print(f"kill of 5x20 orders: {run.duration_ms} ms ({queued_ms} ms before execution began); steps {steps}")
    assert run.status == KillRun.Status.DONE, run.problems
    assert run.orders_cancelled == 100 and run.orders_still_open == 0
    assert [s["name"] for s in run.steps] == STEPS
    assert all(isinstance(s["ms"], int) and s["detail"] for s in run.steps)
    assert all(open_orders(sandbox, t) == [] for t in team)
    assert run.finished_at is not None and run.duration_ms is not None
    assert len(run.balances_after) == 5 and all(v["total"].get("USDT") for v in run.balances_after.values())
    # Every order cancelled: nothing is held by an order any more, all of it is free.
    assert all(v["free"] == v["total"] for v in run.balances_after.values())
    assert Alert.objects.filter(kind="kill_switch", severity=Alert.Severity.CRITICAL).count() == 1
    assert set(Bot.objects.values_list("desired_state", flat=True)) == {Bot.Desired.STOPPED}

    # While halted, the gate refuses every bot and nothing reaches the exchange.
    before = sandbox.admin.order_count().total
    for i, t in enumerate(team):
        intent = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), Decimal("1000"), f"after-kill-{i}")
        with pytest.raises(OrderRefused):
            place_order(bot=t.bot, intent=intent, exchange=t.exchange, price=Decimal("60000"))
    assert sandbox.admin.order_count().total == before

    # Executing a finished run again changes nothing; a second kill is harmless.
    assert kill_execute(run_id=run.pk, process_vault=control_vault).steps == run.steps
    second = kill_request(actor="system:test", reason="again")
    second = kill_execute(run_id=second.pk, process_vault=control_vault)
    assert second.status == KillRun.Status.DONE and second.orders_cancelled == 0 and second.orders_still_open == 0
    assert kill_pending() == 0


def test_a_run_claimed_by_someone_else_is_left_alone(control_vault: vault.ProcessVault) -> None:
    run = kill_request(actor="system:test", reason="test")
    KillRun.objects.filter(pk=run.pk).update(status=KillRun.Status.RUNNING)
    again = kill_execute(run_id=run.pk, process_vault=control_vault)
    assert again.status == KillRun.Status.RUNNING and again.steps == []


def test_a_per_bot_kill_cancels_only_that_bots_account(
    sandbox: Any, traders: Callable[[int], list[Trader]], control_vault: vault.ProcessVault
) -> None:
    target, other = traders(2)
    rest_orders([target, other], 3)
    run = kill_request(actor="system:test", reason="one bot", bot=target.bot)
    run = kill_execute(run_id=run.pk, process_vault=control_vault)
    assert run.status == KillRun.Status.DONE, run.problems
    assert run.orders_cancelled == 3
    assert open_orders(sandbox, target) == [] and len(open_orders(sandbox, other)) == 3
    target.bot.refresh_from_db()
    other.bot.refresh_from_db()
    assert target.bot.halted and target.bot.desired_state == Bot.Desired.STOPPED
    assert not other.bot.halted and other.bot.desired_state == Bot.Desired.RUNNING
    assert not global_halt_active()


def test_the_shell_command_works_with_redis_down(
    sandbox: Any, sandbox_url: str, services: Harness, traders: Callable[[int], list[Trader]], tmp_path: Path
) -> None:
    team = traders(2)
    rest_orders(team, 5)
    env = process_env(
        services,
        token=services.tokens["control"].token,
        var_dir=tmp_path,
        sandbox_url=sandbox_url,
        REDIS_URL="redis://127.0.0.1:9/0",  # nothing listens there: Redis is "stopped"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "killswitch", "--reason", "redis is down"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 0
    assert "Orders cancelled: 10" in done.stdout and "Orders still open: 0" in done.stdout
    assert all(open_orders(sandbox, t) == [] for t in team)
    run = KillRun.objects.get()
    assert run.requested_via == "shell" and run.status == KillRun.Status.DONE
    assert "Redis unavailable" in next(s["detail"] for s in run.steps if s["name"] == "purge")
    assert global_halt_active()


def test_the_control_worker_poller_executes_pending_runs_from_the_database(
    sandbox: Any, traders: Callable[[int], list[Trader]], services: Harness, settings: Any
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 2)
    settings.VAULT_TOKEN = services.tokens["control"].token  # what the control worker runs with
    settings.VAULT_ADDR = services.vault_addr
    run = KillRun.objects.create(scope=KillRun.Scope.ALL, reason="queued while the broker was down")
    stop = threading.Event()
    poller = threading.Thread(target=_poll_forever, args=(stop, 0.1), daemon=True)
    poller.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.status in (KillRun.Status.DONE, KillRun.Status.FAILED):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        poller.join(timeout=10)
    assert run.status == KillRun.Status.DONE, run.problems
    assert run.orders_cancelled == 2 and open_orders(sandbox, trader) == []


def test_the_poller_executes_a_recorded_run_at_once_without_the_broker_or_its_next_poll(
    sandbox: Any, traders: Callable[[int], list[Trader]], services: Harness, settings: Any
) -> None:
    """A kill run's commit notifies the control workers' pollers (PostgreSQL NOTIFY): the run is executed without
    waiting for the broker's message or the next poll (here an hour away), and a rolled-back run wakes nobody."""
    (trader,) = traders(1)
    rest_orders([trader], 2)
    settings.VAULT_TOKEN = services.tokens["control"].token
    settings.VAULT_ADDR = services.vault_addr
    stop = threading.Event()
    poller = threading.Thread(target=_poll_forever, args=(stop, 3600.0), daemon=True)
    poller.start()
    try:
        time.sleep(1)  # its LISTEN is up (a notification before it would wait for the hourly poll)
        press = kill_press(actor="system:test", reason="no broker needed")  # queued too: the broker is up
        assert press.run is not None
        run = press.run
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and run.status not in (KillRun.Status.DONE, KillRun.Status.FAILED):
            time.sleep(0.05)
            run.refresh_from_db()
    finally:
        stop.set()
        poller.join(timeout=10)
    assert run.status == KillRun.Status.DONE, run.problems
    assert run.executor.endswith(f"pid {os.getpid()}")  # this process's poller, not a control worker's queue
    assert run.orders_cancelled == 2 and open_orders(sandbox, trader) == []


def _worker(*queues: str) -> Any:
    return SimpleNamespace(
        consumer=SimpleNamespace(task_consumer=SimpleNamespace(queues=[SimpleNamespace(name=q) for q in queues]))
    )


def test_only_the_control_worker_polls_for_kills() -> None:
    assert consumes_control_queue(_worker("control"))
    assert consumes_control_queue(_worker("celery", "control"))
    assert not consumes_control_queue(_worker("bot.7"))


# -- the final check follows the last worker's exit ------------------------------------------------------


def test_the_final_check_follows_the_last_workers_exit_and_catches_its_late_order(
    sandbox: Any, traders: Callable[[int], list[Trader]], control_vault: vault.ProcessVault
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 3)
    Bot.objects.filter(pk=trader.bot.pk).update(observed_state=Bot.Observed.RUNNING)  # its worker is alive
    late: list[dict[str, Any]] = []

    def worker_still_alive() -> None:
        # A worker that has not exited yet: one more order of it reaches the exchange after the kill's cancel,
        # then the fleet reports the process gone. (Sent straight to the exchange: the gate refuses it now.)
        try:
            deadline = time.monotonic() + 30
            while open_orders(sandbox, trader) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)  # the rest of its tick
            late.append(trader.raw.create_order(SYMBOL, "limit", "buy", 0.01, 1000))
            time.sleep(0.3)
            Bot.objects.filter(pk=trader.bot.pk).update(observed_state=Bot.Observed.STOPPED)
        finally:
            connection.close()

    run = kill_request(actor="system:test", reason="late order")
    thread = threading.Thread(target=worker_still_alive, daemon=True)
    thread.start()
    run = kill_execute(run_id=run.pk, process_vault=control_vault)
    thread.join(timeout=30)
    assert late, "the late order was not placed"
    assert run.status == KillRun.Status.DONE, run.problems
    assert open_orders(sandbox, trader) == []  # the late order too
    assert run.orders_cancelled == 4 and run.orders_still_open == 0 and not run.open_unknown
    at = {s["name"]: s["at_ms"] for s in run.steps}
    assert at["cancel"] <= at["stop"] <= at["verify"]
    assert "after every bot worker had stopped" in next(s["detail"] for s in run.steps if s["name"] == "verify")


def test_a_run_whose_workers_are_not_confirmed_gone_cannot_claim_zero_open(
    sandbox: Any, traders: Callable[[int], list[Trader]], control_vault: vault.ProcessVault, monkeypatch: Any
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 2)
    # No fleet supervisor reports this worker stopped; wait 1 s for it instead of 15.
    Bot.objects.filter(pk=trader.bot.pk).update(observed_state=Bot.Observed.RUNNING)
    monkeypatch.setattr(revoke, "STOP_WAIT_S", 1.0)
    run = kill_execute(run_id=kill_request(actor="system:test", reason="no fleet").pk, process_vault=control_vault)
    assert open_orders(sandbox, trader) == []  # cancelled all the same, without waiting for the workers
    assert run.status == KillRun.Status.FAILED and run.open_unknown
    assert run.still_open_text.startswith("unknown")
    assert "count is unknown" in next(s["detail"] for s in run.steps if s["name"] == "verify")
    assert any("not reported stopped" in p for p in run.problems)
    assert "unknown" in Alert.objects.get(kind="kill_switch").message


def test_a_run_whose_account_does_not_answer_reports_unknown_not_zero(
    sandbox: Any, traders: Callable[[int], list[Trader]], control_vault: vault.ProcessVault
) -> None:
    (trader,) = traders(1)
    rest_orders([trader], 1)
    sandbox.admin.set_permissions(trader.key.api_key, can_read=False)  # the exchange refuses to list its orders
    run = kill_execute(run_id=kill_request(actor="system:test", reason="t").pk, process_vault=control_vault)
    assert run.status == KillRun.Status.FAILED and run.open_unknown and run.still_open_text.startswith("unknown")


def test_a_run_abandoned_by_its_executor_is_marked_failed_and_no_longer_blocks(
    traders: Callable[[int], list[Trader]],
) -> None:
    run = kill_request(actor="system:test", reason="t")
    KillRun.objects.filter(pk=run.pk).update(status="running", started_at=timezone.now() - dt.timedelta(minutes=11))
    assert kill_pending() == 0
    run.refresh_from_db()
    assert run.status == KillRun.Status.FAILED and run.open_unknown and run.finished_at is not None
    assert "stopped before it finished" in run.problems[-1]
    assert AuditEntry.objects.filter(action="killswitch.abandoned", target_id=str(run.pk)).exists()


def test_a_cancel_all_whose_answer_is_lost_counts_every_order_it_cancelled(
    sandbox: Any, traders: Callable[[int], list[Trader]], control_vault: vault.ProcessVault
) -> None:
    """The kill cancels with one cancel-all whose answer names the orders. If that answer is lost, the cancel-all
    asked again answers "nothing open": the orders the first one cancelled are still counted (from our rows,
    settled by the final check), never reported as zero."""
    (trader,) = traders(1)
    for i in range(4):  # through the gate: our rows, as a bot's
        intent = OrderIntent(SYMBOL, "buy", "limit", Decimal("0.01"), Decimal("1000"), f"lost-answer-{i}")
        place_order(bot=trader.bot, intent=intent, exchange=trader.exchange, price=Decimal("60000"))
    assert len(open_orders(sandbox, trader)) == 4
    before = sandbox.admin.faults().count("timeout_after_accept")
    sandbox.admin.timeout_after_accept(1, drop=True, api_key=trader.key.api_key, on="cancel_all")
    try:
        run = kill_request(actor="system:test", reason="test")
        run = kill_execute(run_id=run.pk, process_vault=control_vault)
        faulted = sandbox.admin.faults().count("timeout_after_accept") - before
    finally:
        sandbox.admin.clear_faults()
    assert faulted == 1  # the first cancel-all was carried out and its answer dropped
    assert run.status == KillRun.Status.DONE, run.problems
    assert open_orders(sandbox, trader) == []
    assert run.orders_cancelled == 4 and run.orders_still_open == 0 and not run.open_unknown
    assert set(Order.objects.filter(bot=trader.bot).values_list("status", flat=True)) == {Order.Status.CANCELED}
