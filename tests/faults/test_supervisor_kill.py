"""Fault: the fleet supervisor SIGKILLed while its bots trade, and started again.

The real `manage.py runfleet` runs two live grid bots and a live DCA bot (a market buy every tick), each in its own
spawned `celery worker`. The price moves into the grids, and as soon as every grid bot has begun placing its ten
buys the sandbox exchange is frozen: every worker is caught mid-tick, some mid-order. Then the supervisor is
SIGKILLed and a new one started while the old workers are still stuck (they got SIGTERM from PR_SET_PDEATHSIG and
finish their tick first). A watch samples the worker processes all along: no bot may ever have two workers at once.
Afterwards every bot runs again in a new worker, the old workers' Vault tokens are revoked, every order on the
sandbox has exactly one row in the database, no grid level rests twice and no fill is missing.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.trading.models import Order
from apps.vault import client as vault
from tests.bots.conftest import account  # noqa: F401 - fixture
from tests.faults.process_support import (
    Books,
    Phases,
    Supervisor,
    WorkerWatch,
    books,
    fault_line,
    supervisor_env,  # noqa: F401 - fixture
    trading_bot,
    worker_processes,
)
from tests.fleet_support import alive, frozen, wait_until
from tests.keys import Key

pytestmark = pytest.mark.django_db(transaction=True)

LEVELS = 10
GRID = {"lower": "40000", "upper": "50000", "levels": LEVELS, "order_amount": "0.001"}
# No take-profit within reach: the price doubles in this test, and the DCA bot is here to buy on every tick.
DCA = {"quote_per_buy": "20", "every_ticks": 1, "take_profit_pct": "500"}


def test_a_supervisor_killed_outright_and_restarted_runs_each_bot_once_and_doubles_no_order(
    sandbox: Any,
    pinned_price: None,
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    supervisor_env: dict[str, str],  # noqa: F811
    root_vault: vault.ProcessVault,
    tmp_path: Path,
) -> None:
    phases = Phases()
    traders = [account(f"faults-supervisor-{i}") for i in range(3)]
    grid = [trading_bot(acct, "grid", GRID) for acct, _ in traders[:2]]
    dca = trading_bot(traders[2][0], "dca", DCA)
    bots = [*grid, dca]
    keys = [key.api_key for _, key in traders]
    var_dir = Path(supervisor_env["BOTCONSOLE_VAR_DIR"])
    sandbox.admin.set_price("BTC/USDT", "30000", hold=True)  # below the grids: they wait, the DCA bot buys
    first = Supervisor(supervisor_env, tmp_path / "supervisor-1.log", "--poll", "0.5")
    second: Supervisor | None = None
    try:
        with WorkerWatch(var_dir) as watch:
            wait_until(
                lambda: (
                    Bot.objects.filter(pk__in=[b.pk for b in bots], observed_state="running").count() == len(bots)
                    and Order.objects.filter(bot=dca).exists()
                ),
                "every bot running, the DCA bot buying",
                timeout=90,
            )
            phases.mark("running")
            before = watch.sample()
            assert {b: len(p) for b, p in before.items()} == {b.pk: 1 for b in bots}, before
            old_pids = set().union(*before.values())
            accessors = dict(Bot.objects.filter(pk__in=[b.pk for b in bots]).values_list("pk", "vault_token_accessor"))
            assert all(accessors.values()), accessors

            # The price comes into the grids: each bot places its ten buys on its next tick.
            sandbox.admin.set_price("BTC/USDT", "60000", hold=True)
            wait_until(lambda: all(Order.objects.filter(bot=b).exists() for b in grid), "the grids", every=0.02)
            with frozen(sandbox.proc) as thaw:
                # Longer than a tick's interval: every worker's next exchange call blocks, mid-tick, some mid-order.
                threading.Event().wait(1.5)
                placing = sum(Order.objects.filter(bot=b).count() < LEVELS for b in grid)
                first.kill()
                killed = phases.mark("killed")
                assert all(alive(pid) for pid in old_pids)  # stuck in their ticks, they outlive their supervisor
                second = Supervisor(supervisor_env, tmp_path / "supervisor-2.log", "--poll", "0.5")
                # Its first pass, the old workers still stuck: it starts workers, or waits for the old ones.
                wait_until(lambda: "left running" in second.log() or "worker started" in second.log(), "a first pass")
                phases.mark("restarted")
                threading.Event().wait(0.5)
                thaw()

            def every_bot_runs_again() -> bool:
                now = worker_processes(var_dir)
                fresh = [b for b, p in now.items() if len(p) == 1 and not p & old_pids]
                running = Bot.objects.filter(pk__in=[b.pk for b in bots], observed_state="running").count()
                return len(fresh) == running == len(bots)

            wait_until(every_bot_runs_again, "every bot running again in a new worker", timeout=60)
            resumed = phases.mark("recovered")
            wait_until(
                lambda: all(len(sandbox.admin.open_orders(k)) == LEVELS for k in keys[:2]),
                f"each grid resting {LEVELS} orders",
                timeout=30,
            )
            # The DCA bot buys on in its new worker, and every fill reaches the database.
            dca_orders = Order.objects.filter(bot=dca).count()
            wait_until(lambda: Order.objects.filter(bot=dca).count() >= dca_orders + 2, "the DCA bot's next buys")

            def settled() -> Books | None:
                seen = books(sandbox, keys)
                return seen if not seen.unrecorded and not seen.fills_lost else None

            result = wait_until(settled, "every order and fill on the sandbox in the database", timeout=30)
            phases.mark("settled")
        print(f"grid bots mid-placement at the kill: {placing}; most workers at once per bot: {dict(watch.most)}")
        fault_line("supervisor_sigkill", phases=phases, books=result, recovery_s=resumed - killed)

        # No bot ever ran in two workers at once; the old workers are all gone, one new worker per bot runs.
        assert watch.overlaps == [], watch.overlaps
        assert not any(alive(pid) for pid in old_pids)
        now = worker_processes(var_dir)
        assert {b: len(p) for b, p in now.items()} == {b.pk: 1 for b in bots}
        assert not set().union(*now.values()) & old_pids
        # The new supervisor stopped the workers it found and took their Vault identities away.
        audited = AuditEntry.objects.filter(actor="system:fleet")
        stopped = {int(e.target_id) for e in audited.filter(action="bot.worker_orphan_stopped")}
        print(f"leftover workers stopped by the new supervisor: {len(stopped)} of {len(bots)}")
        assert stopped and stopped <= {b.pk for b in bots}, stopped
        revoked = sorted(int(e.target_id) for e in audited.filter(action="bot.orphan_identity_revoked"))
        assert revoked == sorted(b.pk for b in bots)
        for bot_id, accessor in accessors.items():
            with pytest.raises(vault.VaultError):
                root_vault.token_lookup_accessor(accessor)
            assert Bot.objects.get(pk=bot_id).vault_token_accessor not in ("", accessor)
        # A worker caught mid-order left no half order: each order on the sandbox has its row, no grid level rests
        # twice, no fill is missing; the bots trade on.
        assert placing >= 1
        assert result.duplicates == 0 and result.unrecorded == [] and result.fills_lost == 0
        assert result.placed >= 2 * LEVELS + 3
        assert Bot.objects.filter(pk__in=[b.pk for b in bots], last_heartbeat__gt=_at(resumed)).count() == len(bots)
    finally:
        for n, supervisor in ((2, second), (1, first)):
            if supervisor is not None:
                supervisor.stop()
                print(f"--- supervisor {n}\n{supervisor.own_lines()[-6000:]}")


def _at(monotonic: float) -> dt.datetime:
    """The wall-clock time of a time.monotonic() reading."""
    return timezone.now() - dt.timedelta(seconds=time.monotonic() - monotonic)
