"""A halt wakes the fleet supervisor at once (PostgreSQL LISTEN/NOTIFY), and a kill's workers get no grace.

Real PostgreSQL for the notification, real worker processes for the stop (paper bots: no Vault needed).
The supervisor's loop polls every 30 s here, so a worker stopped within seconds was stopped by the
notification, not by the poll.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import pytest
from django.db import transaction

from apps.audit.models import AuditEntry
from apps.bots.fleet import Fleet
from apps.bots.halts import bot_halt, global_halt_clear, global_halt_set
from apps.bots.models import Bot
from apps.bots.wakeup import Wakeup
from apps.exchanges.models import ExchangeAccount
from apps.killswitch.services import kill_press
from tests.bots.test_fleet import alive, make_bot, observed, wait_for
from tests.fleet_support import FleetLoop, wait_until
from tests.keys import Key

pytestmark = pytest.mark.django_db(transaction=True)
SLOW_POLL_S = 30.0


def test_a_committed_halt_wakes_a_listener_and_a_rolled_back_one_does_not() -> None:
    wakeup, stop = Wakeup(), threading.Event()
    try:
        assert wakeup.wait(0.2, stop) is False  # connects and listens; nothing sent yet
        with pytest.raises(RuntimeError), transaction.atomic():
            global_halt_set(reason="rolled back", actor="system:test")
            raise RuntimeError("roll back")
        assert wakeup.wait(0.5, stop) is False
        global_halt_set(reason="committed", actor="system:test")
        assert wakeup.wait(5.0, stop) is True
    finally:
        wakeup.close()
        global_halt_clear(actor="system:test")


def _worker_stopped(bot: Bot) -> AuditEntry | None:
    return AuditEntry.objects.filter(action="bot.worker_stopped", target_id=str(bot.pk)).order_by("-seq").first()


def test_an_emergency_stop_kills_the_worker_at_once_without_waiting_for_the_poll(
    fleet: Fleet, account: Callable[[str], tuple[ExchangeAccount, Key]]
) -> None:
    acct, _ = account("Paper")
    bot = make_bot(acct, "wakeup-paper", mode="paper")
    calm = make_bot(acct, "wakeup-calm", mode="paper")
    fleet.sync_once()
    wait_for(lambda: observed(bot) == "running" and observed(calm) == "running", "both workers", fleet=fleet)
    worker, other = fleet.workers[bot.pk], fleet.workers[calm.pk]
    loop = FleetLoop(fleet, poll_s=SLOW_POLL_S).start()
    try:
        assert fleet.listening.wait(10), "the supervisor never listened for halts"
        kill_press(actor="system:test", reason="wake test", bot=bot)
        wait_until(lambda: not alive(worker.pid), "the emergency-stopped worker to be gone", timeout=10)
        entry = wait_until(lambda: _worker_stopped(bot), "its stop in the audit log", timeout=10)
        assert entry.data["code"] == -signal.SIGKILL  # no grace: killed, not asked to finish its tick
        assert "emergency" in entry.data["reason"]
        assert observed(bot) == "halted"
        assert alive(other.pid) and observed(calm) == "running"  # the other bot was not touched
    finally:
        loop.stop()


def test_a_breaker_halt_still_stops_the_worker_gracefully(
    fleet: Fleet, account: Callable[[str], tuple[ExchangeAccount, Key]]
) -> None:
    acct, _ = account("Paper")
    bot = make_bot(acct, "wakeup-breaker", mode="paper")
    fleet.sync_once()
    wait_for(lambda: observed(bot) == "running", "the worker", fleet=fleet)
    worker = fleet.workers[bot.pk]
    loop = FleetLoop(fleet, poll_s=0.3).start()
    try:
        bot_halt(bot=bot, reason="daily_loss", message="test breaker")
        entry = wait_until(lambda: _worker_stopped(bot), "its stop in the audit log", timeout=30)
        assert entry.data["code"] == 0  # SIGTERM: a warm shutdown
        assert entry.data["reason"] == "stopped"
        assert not alive(worker.pid)
    finally:
        loop.stop()
