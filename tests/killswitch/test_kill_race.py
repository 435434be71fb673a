"""A kill is final, whatever arrives at the same time (issue 13, item 10), with the whole machinery.

Live grid bots run as real workers started by the fleet supervisor, a real control worker executes the
kill, the orders go to the real sandbox exchange. The panic button is pressed (through the web view)
while the bots are placing their first orders, and an admin tries to resume 0, 50 or 150 ms later. Each
time, afterwards: the resume was refused while the kill was still running (or came only after every
order was cancelled and verified), no order was placed after the halt, the report's counts are the
exchange's own, and the sandbox holds no open order of those bots, even once trading has resumed.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from apps.audit.models import AuditEntry
from apps.bots.fleet import Fleet
from apps.bots.halts import global_halt_active, global_halt_state
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.killswitch.models import KillRun
from tests.fleet_support import (  # noqa: F401 - fixtures
    ControlWorker,
    FleetLoop,
    fleet,
    fleet_vault,
    wait_until,
    worker_env,
)
from tests.harness import Harness
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db(transaction=True)

SYMBOL = "BTC/USDT"
BOTS = 3
LEVELS = 20  # each bot's first tick places this many buys, one after the other
GRID = {"lower": "40000", "upper": "50000", "levels": LEVELS, "order_amount": "0.001"}  # below 60,000: they rest
_names = itertools.count(1)


@pytest.fixture
def control_worker(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[ControlWorker]:
    worker = ControlWorker(services, tmp_path / "control", sandbox_url)
    try:
        yield worker
    finally:
        worker.stop()
        print(f"--- control worker\n{worker.log()[-3000:]}")


def grid_bot(new_key: Callable[..., Key]) -> tuple[Bot, Key]:
    key = new_key()
    account: ExchangeAccount
    account, _ = exchange_account_create(
        label=f"race-{key.api_key[-8:]}",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    bot = Bot.objects.create(
        name=f"race-grid-{next(_names)}-{key.api_key[-6:]}",
        account=account,
        strategy="grid",
        params=GRID,
        symbols=[SYMBOL],
        mode=Bot.Mode.LIVE,
        tick_interval_s=1,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("5000"),
        max_open_orders=50,
        max_orders_per_minute=100,
        daily_loss_limit=Decimal("100000"),
        max_drawdown_pct=Decimal("90"),
        desired_state=Bot.Desired.RUNNING,
    )
    return bot, key


def open_orders(sandbox: Any, keys: list[Key]) -> list[dict[str, Any]]:
    return [o for k in keys for o in sandbox.admin.open_orders(k.api_key)]


@pytest.mark.parametrize("resume_after_ms", [0, 50, 150])
def test_a_resume_right_after_a_panic_press_during_the_first_orders_leaves_no_order_open(
    resume_after_ms: int,
    sandbox: Any,
    pinned_price: None,
    new_key: Callable[..., Key],
    fleet: Fleet,  # noqa: F811
    control_worker: ControlWorker,
    logged_in: Callable[[str], tuple[Client, Person]],
) -> None:
    operator, _ = logged_in("operator")
    admin, who = logged_in("admin")
    admin.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    made = [grid_bot(new_key) for _ in range(BOTS)]
    keys = [key for _, key in made]

    loop = FleetLoop(fleet).start()
    try:
        control_worker.wait_ready()
        # The bots are placing their first orders: press now, while their grids are still going out.
        wait_until(lambda: sum(len(sandbox.admin.orders(k.api_key)) for k in keys) >= 2, "the first orders", 180, 0.01)
        pressed = operator.post("/killswitch/", {"reason": "race"})
        pressed_at = time.monotonic()
        assert pressed.status_code == 302, pressed.content[:500]
        halt_since = global_halt_state().since
        assert halt_since is not None
        placed_before = sum(len(sandbox.admin.orders(k.api_key)) for k in keys)

        answer: dict[str, Any] = {}

        def resume() -> None:
            try:
                time.sleep(max(0.0, pressed_at + resume_after_ms / 1000 - time.monotonic()))
                answer["response"] = admin.post("/killswitch/resume/", {"reason": "race resume"})
            finally:
                connection.close()

        resumer = threading.Thread(target=resume, daemon=True)
        resumer.start()
        resumer.join(timeout=60)
        response = answer["response"]
        run = wait_until(
            lambda: KillRun.objects.filter(status__in=["done", "failed"]).first(), "the kill's report", timeout=120
        )
        print(f"resume after {resume_after_ms} ms: {response.status_code}; run {run.status} {run.steps}")

        # Nothing reached the exchange after the halt, and nothing is left open.
        assert not AuditEntry.objects.filter(action="order.placed", created_at__gt=halt_since).exists()
        assert open_orders(sandbox, keys) == []
        assert run.status == KillRun.Status.DONE, run.problems
        assert run.orders_still_open == 0 and not run.open_unknown
        # True counts: every order the bots placed was resting, and the kill cancelled each once.
        placed = sum(len(sandbox.admin.orders(k.api_key)) for k in keys)
        assert placed == placed_before and run.orders_cancelled == placed

        # The resume was refused (the kill still running), or came only once everything was verified.
        if response.status_code == 302:
            resumed = AuditEntry.objects.get(action="killswitch.resumed")
            assert run.finished_at is not None and resumed.created_at >= run.finished_at
        else:
            assert response.status_code == 409, response.content[:500]
            assert "still in progress" in response.content.decode() or "still alive" in response.content.decode()
            assert global_halt_active()

        # Now that the kill is verified, a resume is accepted, and nothing starts ordering again.
        if response.status_code != 302:
            assert admin.post("/killswitch/resume/", {"reason": "verified"}).status_code == 302
        assert not global_halt_active()
        time.sleep(2)
        assert open_orders(sandbox, keys) == []
        assert sum(len(sandbox.admin.orders(k.api_key)) for k in keys) == placed
        assert set(Bot.objects.filter(pk__in=[b.pk for b, _ in made]).values_list("desired_state", flat=True)) == {
            Bot.Desired.STOPPED
        }
    finally:
        loop.stop()
