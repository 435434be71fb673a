"""Safety actions meeting each other for real: threads, each with its own database connection (issue 13, item 10).

Two presses at once make one kill run (the second joins it, audited as such) whose counts are true; a press
and a resume at once leave trading halted; a press and a bot start at once never leave the bot desired-running;
of two resumes at once exactly one succeeds. Where the outcome depends on an interleaving, the test pins the
bad one with real PostgreSQL locks (an advisory lock, a table lock) held by the test, and checks with
pg_stat_activity that each thread is waiting where it should before letting it go on.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEntry
from apps.audit.services import AUDIT_LOCK_KEY
from apps.bots.halts import global_halt_active, global_halt_clear, global_halt_set, global_halt_state
from apps.bots.identities import token_accessor_report
from apps.bots.models import Bot
from apps.bots.services import bot_start
from apps.core.exceptions import ApplicationError
from apps.exchanges.models import ExchangeAccount
from apps.killswitch import services
from apps.killswitch.models import KillRun
from apps.killswitch.runner import kill_execute
from apps.killswitch.services import kill_request, trading_resume
from apps.vault import client as vault
from tests.harness import Harness
from tests.killswitch.test_engine import Trader, open_orders, rest_orders, traders  # noqa: F401 - fixture
from tests.people import make_person

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None


def start(fn: Callable[[], Any], barrier: threading.Barrier | None = None) -> tuple[threading.Thread, Outcome]:
    """Run `fn` in a thread with its own database connection (closed at the end)."""
    outcome = Outcome()

    def body() -> None:
        try:
            if barrier is not None:
                barrier.wait(timeout=30)
            outcome.value = fn()
        except BaseException as exc:  # handed to the test
            outcome.error = exc
        finally:
            connection.close()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def at_once(*fns: Callable[[], Any]) -> list[Outcome]:
    """Start every fn at the same moment (a barrier), each in its own thread and transaction; wait for all."""
    barrier = threading.Barrier(len(fns))
    started = [start(fn, barrier) for fn in fns]
    for thread, _ in started:
        thread.join(timeout=120)
        assert not thread.is_alive()
    return [outcome for _, outcome in started]


def waiting_on_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # inside a transaction it would be read once only
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return int(cursor.fetchone()[0])


def wait_for_waiters(n: int) -> None:
    deadline = time.monotonic() + 30
    while waiting_on_locks() < n:
        assert time.monotonic() < deadline, f"expected {n} backend(s) waiting on a lock"
        time.sleep(0.02)


@pytest.fixture
def admins(db: None) -> list[User]:
    return [make_person(f"admin-{i}", "admin").user for i in range(2)]


@pytest.fixture
def fleet_bots(new_key: Callable[..., Any]) -> list[Bot]:
    from apps.exchanges.services import exchange_account_create

    key = new_key()
    account, _ = exchange_account_create(
        label="Concurrency",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    fields: dict[str, Any] = {
        "account": account,
        "strategy": "grid",
        "symbols": ["BTC/USDT"],
        "mode": Bot.Mode.LIVE,
        "desired_state": Bot.Desired.RUNNING,
        "max_order_notional": Decimal(1000),
        "max_position_notional": Decimal(5000),
        "daily_loss_limit": Decimal(1000),
        "max_drawdown_pct": Decimal(50),
    }
    return [Bot.objects.create(name=f"concurrency {i}", **fields) for i in range(2)]


def finish_runs() -> None:
    """What the control worker would do in the end: every run done, every worker reported stopped."""
    KillRun.objects.exclude(status__in=["done", "failed"]).update(status="done", finished_at=timezone.now())
    Bot.objects.update(observed_state=Bot.Observed.STOPPED)


# -- two presses ----------------------------------------------------------------------------------------


def test_two_panic_presses_at_once_make_one_run_and_the_second_is_audited_as_joining_it(
    fleet_bots: list[Bot],
) -> None:
    outcomes = at_once(
        lambda: kill_request(actor="system:test", reason="first"),
        lambda: kill_request(actor="system:test", reason="second"),
    )
    assert [o.error for o in outcomes] == [None, None]
    run = KillRun.objects.get()
    assert run.scope == KillRun.Scope.ALL and run.status == KillRun.Status.PENDING
    assert {o.value.pk for o in outcomes} == {run.pk}
    pressed = list(AuditEntry.objects.filter(action="killswitch.pressed").order_by("seq"))
    assert len(pressed) == 2 and all(e.data["run"] == run.pk for e in pressed)
    assert "joined_run" not in pressed[0].data and pressed[1].data["joined_run"] == run.pk
    assert global_halt_active()


def test_a_press_joins_a_run_of_its_scope_while_it_is_pending_or_running_and_not_after(
    fleet_bots: list[Bot],
) -> None:
    first = services.kill_press(actor="system:test", reason="one")
    assert not first.joined and first.run is not None
    assert services.kill_press(actor="system:test", reason="two").run == first.run  # pending
    KillRun.objects.filter(pk=first.run.pk).update(status="running", started_at=timezone.now())
    per_bot = services.kill_press(actor="system:test", reason="three", bot=fleet_bots[0])  # covered by the run of all
    assert per_bot.joined and per_bot.run == first.run
    assert Bot.objects.get(pk=fleet_bots[0].pk).halted  # its own halt committed all the same
    assert KillRun.objects.count() == 1
    KillRun.objects.filter(pk=first.run.pk).update(status="done", finished_at=timezone.now())
    after = services.kill_press(actor="system:test", reason="four")
    assert not after.joined and after.run is not None and KillRun.objects.count() == 2
    # A run abandoned by its executor (claimed long ago, never finished) is not joined.
    claimed_long_ago = timezone.now() - dt.timedelta(hours=1)
    KillRun.objects.filter(pk=after.run.pk).update(status="running", started_at=claimed_long_ago)
    assert not services.kill_press(actor="system:test", reason="five").joined


def test_a_per_bot_press_joins_a_run_for_the_same_bot_and_a_global_press_does_not(fleet_bots: list[Bot]) -> None:
    one = services.kill_press(actor="system:test", reason="runaway", bot=fleet_bots[0])
    again = services.kill_press(actor="system:test", reason="still", bot=fleet_bots[0])
    other = services.kill_press(actor="system:test", reason="other", bot=fleet_bots[1])
    everything = services.kill_press(actor="system:test", reason="all")
    assert again.joined and again.run == one.run
    assert not other.joined and not everything.joined  # a per-bot run does not cover every bot
    assert KillRun.objects.count() == 3


def test_two_presses_at_once_with_real_orders_report_true_counts(
    sandbox: Any,
    traders: Callable[[int], list[Trader]],  # noqa: F811
    control_vault: vault.ProcessVault,
) -> None:
    team = traders(3)
    rest_orders(team, 5)

    def press_and_execute(reason: str) -> KillRun:
        # What two `manage.py killswitch` at once do: press, then execute the run (or wait for its executor).
        run = kill_request(actor="system:test", reason=reason, via="shell")
        run = kill_execute(run_id=run.pk, process_vault=control_vault)
        deadline = time.monotonic() + 60
        while run.status == KillRun.Status.RUNNING and time.monotonic() < deadline:
            time.sleep(0.1)
            run.refresh_from_db()
        return run

    outcomes = at_once(lambda: press_and_execute("a"), lambda: press_and_execute("b"))
    assert [o.error for o in outcomes] == [None, None]
    run = KillRun.objects.get()
    assert run.status == KillRun.Status.DONE, run.problems
    assert run.orders_cancelled == 15 and run.orders_still_open == 0 and not run.open_unknown
    assert all(open_orders(sandbox, t) == [] for t in team)


def test_a_bot_run_and_a_run_of_all_revoking_the_same_token_report_no_false_vault_problem(
    fleet_bots: list[Bot], services: Harness, root_vault: vault.ProcessVault, control_vault: vault.ProcessVault
) -> None:
    fleet_vault = vault.ProcessVault(services.vault_addr, services.tokens["fleet"].token)
    bot = fleet_bots[0]
    try:
        fleet_vault.policy_write(bot.vault_role, vault.bot_policy_text(str(bot.account_id)))
        fleet_vault.bot_role_write(bot.pk)
        role_id = fleet_vault.bot_role_id(bot.pk)
        secret_id = vault.unwrap(services.vault_addr, fleet_vault.bot_secret_id_wrapped(bot.pk).wrapping_token)
        login = vault.approle_login(services.vault_addr, role_id, str(secret_id["secret_id"]))
        token_accessor_report(bot.pk, login.accessor, ttl_s=60)
        for _ in range(3):
            fleet_vault.bot_secret_id_wrapped(bot.pk)  # SecretIDs issued and not used yet
        bot_run = kill_request(actor="system:test", reason="one bot", bot=bot)
        all_run = kill_request(actor="system:test", reason="everything")
        assert bot_run.pk != all_run.pk
        outcomes = at_once(
            lambda: kill_execute(run_id=bot_run.pk, process_vault=control_vault),
            lambda: kill_execute(run_id=all_run.pk, process_vault=control_vault),
        )
        assert [o.error for o in outcomes] == [None, None]
        for run in KillRun.objects.all():
            assert run.status == KillRun.Status.DONE and not [p for p in run.problems if "revoke" in p], run.problems
        with pytest.raises(vault.VaultError):
            root_vault.token_lookup_accessor(login.accessor)
        assert control_vault.bot_secret_id_accessors(bot.pk) == []
    finally:
        fleet_vault.bot_role_delete(bot.pk)
        fleet_vault.policy_delete(bot.vault_role)


# -- press and resume -----------------------------------------------------------------------------------


def test_a_press_and_a_resume_at_once_leave_trading_halted_when_the_press_halts_first(
    fleet_bots: list[Bot], admins: list[User]
) -> None:
    global_halt_set(reason="an earlier kill", actor="system:test")
    finish_runs()  # that kill is over: a resume alone would be accepted now
    with transaction.atomic():
        # Hold audit appends: the press stops right after taking the halt row, before committing it.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
        press_thread, press = start(lambda: kill_request(actor="system:test", reason="again"))
        wait_for_waiters(1)
        resume_thread, resume = start(lambda: trading_resume(actor=admins[0], reason="all clear"))
        wait_for_waiters(2)  # the resume arrived while the press was under way
    press_thread.join(timeout=60)
    resume_thread.join(timeout=60)
    assert press.error is None
    assert isinstance(resume.error, ApplicationError) and "still in progress" in resume.error.message
    assert global_halt_active()
    assert not AuditEntry.objects.filter(action__in=["killswitch.resumed", "trading.resumed"]).exists()


def test_presses_and_resumes_at_once_always_end_halted(fleet_bots: list[Bot], admins: list[User]) -> None:
    for i in range(5):
        global_halt_set(reason=f"kill {i}", actor="system:test")
        finish_runs()
        press, resume = at_once(
            lambda: kill_request(actor="system:test", reason=f"press {i}"),  # noqa: B023 - run before the loop moves
            lambda: trading_resume(actor=admins[i % 2], reason=f"resume {i}"),  # noqa: B023
        )
        assert press.error is None
        assert global_halt_active(), f"round {i}: trading resumed after (or while) the panic button was pressed"
        if resume.error is None:  # it went first: the press came after it, and halted again
            resumed = AuditEntry.objects.filter(action="killswitch.resumed").latest("seq")
            halted = AuditEntry.objects.filter(action="trading.halted").latest("seq")
            assert resumed.seq < halted.seq
        else:
            assert "still in progress" in str(resume.error)


def test_a_press_and_a_bot_start_at_once_never_leave_the_bot_started(fleet_bots: list[Bot]) -> None:
    bot = fleet_bots[0]
    Bot.objects.filter(pk=bot.pk).update(desired_state=Bot.Desired.STOPPED)
    operator = make_person("operator-starting", "operator").user
    with transaction.atomic():
        # Hold the start right after its checks (it is reading the bot's account next) ...
        with connection.cursor() as cursor:
            cursor.execute(f"LOCK TABLE {ExchangeAccount._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        start_thread, started = start(lambda: bot_start(bot=Bot.objects.get(pk=bot.pk), actor=operator))
        wait_for_waiters(1)
        # ... while the whole panic press happens.
        press_thread, press = start(lambda: kill_request(actor="system:test", reason="now"))
        press_thread.join(timeout=60)
        assert press.error is None and global_halt_active()
    start_thread.join(timeout=60)
    assert isinstance(started.error, ApplicationError) and "halted" in started.error.message
    assert Bot.objects.get(pk=bot.pk).desired_state == Bot.Desired.STOPPED
    assert not AuditEntry.objects.filter(action="bot.start_requested").exists()


def test_presses_and_bot_starts_at_once_always_end_halted_with_the_bot_stopped(fleet_bots: list[Bot]) -> None:
    bot = fleet_bots[0]
    operator = make_person("operator-racing", "operator").user
    for i in range(5):
        if global_halt_active():
            global_halt_clear(actor="system:test")
        finish_runs()
        Bot.objects.filter(pk=bot.pk).update(desired_state=Bot.Desired.STOPPED)
        press, _ = at_once(
            lambda: kill_request(actor="system:test", reason=f"press {i}"),  # noqa: B023
            lambda: bot_start(bot=Bot.objects.get(pk=bot.pk), actor=operator),
        )
        assert press.error is None
        assert global_halt_active() and global_halt_state().reason == f"press {i}"
        assert Bot.objects.get(pk=bot.pk).desired_state == Bot.Desired.STOPPED, f"round {i}: the start won"


# -- two resumes ----------------------------------------------------------------------------------------


def test_of_two_resumes_at_once_exactly_one_succeeds(fleet_bots: list[Bot], admins: list[User]) -> None:
    global_halt_set(reason="leak", actor="system:test")
    finish_runs()
    outcomes = at_once(
        lambda: trading_resume(actor=admins[0], reason="first"),
        lambda: trading_resume(actor=admins[1], reason="second"),
    )
    errors = [o.error for o in outcomes]
    assert errors.count(None) == 1
    refused = next(e for e in errors if e is not None)
    assert isinstance(refused, ApplicationError) and "nothing to resume" in refused.message
    assert AuditEntry.objects.filter(action="killswitch.resumed").count() == 1
    assert not global_halt_active()
