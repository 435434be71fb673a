"""Fault: the control worker SIGKILLed in the middle of a kill, after it claimed the run and before it finished.

Three live grid bots run under the real fleet supervisor (`manage.py runfleet`, workers forked from the template)
with their orders resting on the sandbox; a real control worker runs the kill poller. The sandbox is frozen, the
kill pressed, and once the control worker has claimed the run (its cancels hang on the frozen exchange) the whole
worker is SIGKILLed. A control worker started again must take the run over once its executor's lease has lapsed and
complete it: zero open orders on the sandbox, every bot stopped, and a report (row and page) that says the run was
interrupted and taken over.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.killswitch.models import RUN_LEASE, KillRun
from apps.killswitch.runner import _Lease, _take_over, executor_name, kill_execute
from apps.killswitch.services import kill_request
from tests.bots.conftest import account  # noqa: F401 - fixture
from tests.faults.process_support import (
    Phases,
    Supervisor,
    books,
    fault_line,
    supervisor_env,  # noqa: F401 - fixture
    trading_bot,
    worker_processes,
)
from tests.fleet_support import ControlWorker, alive, frozen, wait_until
from tests.harness import Harness
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db(transaction=True)

LEVELS = 5
GRID = {"lower": "40000", "upper": "50000", "levels": LEVELS, "order_amount": "0.001"}


@pytest.fixture
def control_workers(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[Callable[[], ControlWorker]]:
    started: list[ControlWorker] = []

    def start() -> ControlWorker:
        started.append(ControlWorker(services, tmp_path / f"control-{len(started) + 1}", sandbox_url))
        return started[-1]

    yield start
    for n, worker in enumerate(started, 1):
        worker.stop()
        print(f"--- control worker {n}\n{worker.log()[-3000:]}")


def test_a_kill_whose_control_worker_is_killed_mid_run_is_taken_over_and_completed(
    sandbox: Any,
    pinned_price: None,
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    supervisor_env: dict[str, str],  # noqa: F811
    control_workers: Callable[[], ControlWorker],
    logged_in: Callable[[str], tuple[Client, Person]],
    tmp_path: Path,
) -> None:
    phases = Phases()
    traders = [account(f"faults-control-{i}") for i in range(3)]
    bots = [trading_bot(acct, "grid", GRID) for acct, _ in traders]
    keys = [key.api_key for _, key in traders]
    var_dir = Path(supervisor_env["BOTCONSOLE_VAR_DIR"])
    fleet_env = {**supervisor_env, "FLEET_WORKER_MODE": "fork"}
    supervisor = Supervisor(fleet_env, tmp_path / "supervisor.log", "--poll", "0.5", "--no-market-data")
    try:
        first = control_workers()
        wait_until(
            lambda: all(len(sandbox.admin.open_orders(k)) == LEVELS for k in keys),
            f"each grid bot resting {LEVELS} orders",
            timeout=90,
        )
        first.wait_ready()
        assert set(worker_processes(var_dir)) == {b.pk for b in bots}
        phases.mark("running")

        with frozen(sandbox.proc) as thaw:
            # In a thread: should a worker's order be in flight at the freeze, it holds the halt back until it answers.
            pressed: list[KillRun] = []
            press = threading.Thread(target=lambda: pressed.append(kill_request(actor="system:test", reason="drill")))
            press.start()
            press.join(timeout=10)
            assert pressed, "the press did not return"
            run = pressed[0]
            claimed = wait_until(
                lambda: KillRun.objects.filter(pk=run.pk, status="running").exclude(executor="").first(),
                "the control worker to claim the run",
                timeout=20,
                every=0.02,
            )
            threading.Event().wait(0.5)  # its cancels are sent and hang on the frozen exchange
            os.killpg(first.proc.pid, signal.SIGKILL)  # the whole worker: main process and pool
            first.proc.wait(timeout=10)
            killed = phases.mark("killed")
            interrupted = KillRun.objects.get(pk=run.pk)
            assert interrupted.status == KillRun.Status.RUNNING
            assert "verify" not in [s["name"] for s in interrupted.steps]
            thaw()
        second = control_workers()
        run = wait_until(
            lambda: KillRun.objects.filter(pk=run.pk, status__in=["done", "failed"]).first(),
            "the kill to be taken over and finished",
            timeout=60,
        )
        recovery_s = phases.mark("finished") - killed
        result = books(sandbox, keys)
        fault_line("control_worker_sigkill", phases=phases, books=result, recovery_s=recovery_s)
        print(f"kill run: {run.status}, {run.executor}; takeovers {run.takeovers}; steps {run.steps}")

        # The run is complete and verified: nothing open on the sandbox, every bot stopped, every worker gone.
        assert run.status == KillRun.Status.DONE, run.problems
        assert run.orders_still_open == 0 and not run.open_unknown
        assert all(sandbox.admin.open_orders(k) == [] for k in keys)
        assert [s["name"] for s in run.steps][-2:] == ["verify", "balances"]
        assert set(Bot.objects.filter(pk__in=[b.pk for b in bots]).values_list("observed_state", flat=True)) <= {
            Bot.Observed.STOPPED,
            Bot.Observed.HALTED,
        }
        assert worker_processes(var_dir) == {}
        assert result.duplicates == 0 and result.unrecorded == [] and result.placed == 3 * LEVELS
        # It was taken over by the second control worker, from the first, which the report names.
        assert not alive(first.proc.pid) and second.proc.poll() is None
        assert run.attempts == 2 and len(run.takeovers) == 1
        takeover = run.takeovers[0]
        assert takeover["from"] == claimed.executor and takeover["by"] == run.executor != claimed.executor
        assert "verify" not in takeover["steps_done"]
        entry = AuditEntry.objects.get(action="killswitch.resumed_after_crash", target_id=str(run.pk))
        assert entry.actor == "system:killswitch" and entry.data["from"] == claimed.executor
        client, _ = logged_in("operator")
        page = client.get(f"/killswitch/runs/{run.pk}/").content.decode()
        assert "Interrupted" in page and f"({claimed.executor}) stopped answering" in page
        assert "executed again from the start" in page and "Done" in page
    finally:
        supervisor.stop()
        print(f"--- supervisor\n{supervisor.own_lines()[-4000:]}")


def test_a_run_whose_executor_renews_its_lease_is_never_taken_over_and_a_lost_one_writes_nothing(
    db: None,
) -> None:
    run = kill_request(actor="system:test", reason="lease")
    now = timezone.now()
    KillRun.objects.filter(pk=run.pk).update(
        status="running", started_at=now, claim="a" * 32, executor="elsewhere pid 1", heartbeat_at=now, attempts=1
    )
    assert _take_over(run.pk) is None  # its executor is alive
    assert kill_execute(run_id=run.pk).claim == "a" * 32  # so is a second executor's attempt
    lapsed = timezone.now() - RUN_LEASE - dt.timedelta(seconds=1)
    KillRun.objects.filter(pk=run.pk).update(heartbeat_at=lapsed)
    claim = _take_over(run.pk)
    assert claim is not None and _take_over(run.pk) is None  # one executor takes it over, not two
    run.refresh_from_db()
    assert (run.claim, run.executor, run.attempts) == (claim, executor_name(), 2)
    assert run.takeovers[0]["from"] == "elsewhere pid 1"
    # The first executor, thawed, finds the run is not its own any more: its report changes nothing.
    assert _Lease(run.pk, "a" * 32).rows().update(steps=[{"name": "verify"}]) == 0
    assert KillRun.objects.get(pk=run.pk).steps == []
