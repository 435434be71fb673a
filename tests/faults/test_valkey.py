"""Fault 2: Valkey (Celery's broker, the live feed's wake-ups) restarted under a trading fleet.

Valkey is stopped for OUTAGE_S while the bots trade, a viewer's dashboard socket is open and the console keeps
publishing events (the fleet's, the workers' log lines, one of the test's own), then started again on the same
port. Every worker must reconnect by itself (the same processes: none restarted), each bot's ticks resume at
once (no gap between two ticks much longer than the outage), the socket receives every event stored meanwhile,
once and in order, and the books agree: nothing lost or doubled.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.bots import events as bot_events
from apps.events.models import Event
from launcher.embedded import running, stop_process_group
from tests.faults import broker_probe
from tests.faults.support import ROOT, Books, FaultScenario, LiveSocket, Outage, fault_report, server_stopped
from tests.fleet_support import wait_until
from tests.harness import Harness

pytestmark = pytest.mark.django_db(transaction=True)

FAULT_TIMEOUT_S = 200.0
OUTAGE_S = 10.0
# A bot's ticks may pause for the outage, plus the worker's reconnection and one tick interval or two.
TICK_GAP_SLACK_S = 6.0
WITHHELD = ("DJANGO_", "DATABASE_", "REDIS_", "VAULT_")


def _tick_gaps(bot_ids: list[int], since: Any) -> dict[int, float]:
    """Each bot's longest pause between two ticks (its heartbeat events) since `since`."""
    gaps: dict[int, float] = {}
    for bot_id in bot_ids:
        beats = list(
            Event.objects.filter(kind="heartbeat", bot_id=bot_id, created_at__gte=since)
            .order_by("seq")
            .values_list("created_at", flat=True)
        )
        gaps[bot_id] = max(((b - a).total_seconds() for a, b in itertools.pairwise(beats)), default=0.0)
    return gaps


def test_valkey_restarted_workers_reconnect_ticks_resume_and_the_live_feed_misses_nothing(
    fault_scenario: FaultScenario, services: Harness, logged_in: Callable[[str], tuple[Client, Any]]
) -> None:
    scenario = fault_scenario.start()
    assert scenario.loop is not None
    client, _ = logged_in("admin")  # an admin sees every event, security alerts too
    pids = scenario.loop.pids()
    with LiveSocket(client) as feed:
        feed.wait_for(Event.objects.order_by("-seq").values_list("seq", flat=True).first() or 0)
        with Outage("valkey") as outage, server_stopped(services, "valkey"):
            bot_events.bot_state(scenario.bots[0].pk)  # stored; its announcement fails
            during = Event.objects.filter(kind="bot_state").order_by("-seq").values_list("seq", flat=True)[0]
            time.sleep(OUTAGE_S)
        recovered = scenario.wait_ticking(after=outage.ended)
        books = scenario.settled()
        last = Event.objects.order_by("-seq").values_list("seq", flat=True).first()
        assert last is not None
        feed.wait_for(last)
        first = feed.seqs[0]
        stored = list(Event.objects.filter(seq__gte=first, seq__lte=last).order_by("seq").values_list("seq", flat=True))
        received = [s for s in feed.seqs if s <= last]
    fault_report("valkey_restart", duration_s=outage.duration_s, books=books, recovery_s=recovered - outage.ended_mono)

    # The live feed: every event stored from the first the socket got to the last, once and in order.
    assert received == stored, (len(received), len(stored), sorted(set(stored) - set(received))[:10])
    assert during in received
    # The same worker processes, reconnected (none crashed and restarted).
    assert scenario.loop.pids() == pids
    gaps = _tick_gaps([b.pk for b in scenario.bots], since=outage.began)
    assert all(gap <= outage.duration_s + TICK_GAP_SLACK_S for gap in gaps.values()), (outage.duration_s, gaps)
    books.assert_clean()


class ProbeWorker:
    """A worker of tests/faults/broker_probe.py on the broker at `url`, logging to `log`."""

    def __init__(self, url: str, log: Path) -> None:
        self.log = log
        argv = [sys.executable, "-m", "celery", "-A", "tests.faults.broker_probe", "worker", "-P", "solo"]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [*argv, "--without-mingle", "--without-gossip", "-l", "INFO"],
                cwd=ROOT,
                # Without Django (celery would set it up from DJANGO_SETTINGS_MODULE) and the session's servers.
                env={**{k: v for k, v in os.environ.items() if not k.startswith(WITHHELD)}, "PROBE_BROKER_URL": url},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, what: str) -> None:
        wait_until(lambda: needle in self.text(), what, timeout=60)

    def alive(self) -> bool:
        return self.proc.poll() is None and "Unrecoverable" not in self.text()


def test_a_worker_holding_a_delayed_task_survives_its_broker_going_away(tmp_path: Path) -> None:
    """What the test above meets only when a worker happens to hold its next tick as Valkey goes, every time: a
    worker holding a delayed (unacknowledged) message loses its broker. Celery's own consumer then exits
    ("Unrecoverable error: AttributeError"); the project's (apps.core.workers) reconnects and works on. On a
    private Valkey (the launcher's), so nothing else is disturbed."""
    with running(tmp_path / "var", ("valkey",)) as servers:
        url = servers.env["REDIS_URL"]
        worker = ProbeWorker(url, tmp_path / "probe-worker.log")
        try:
            worker.wait_for("ready.", "the probe worker")
            broker_probe.app.conf.update(broker_url=url)
            broker_probe.ping.apply_async(args=(1,), countdown=300)  # held by the worker, unacknowledged
            worker.wait_for("received", "the worker to hold the delayed task")
            with Outage("valkey_under_a_held_task") as outage:
                servers.stop_one("valkey")
                worker.wait_for("Connection to broker lost", "the worker to notice")
                time.sleep(1.0)
                assert worker.alive(), worker.text()[-3000:]
                servers.start_one("valkey")
            broker_probe.ping.delay(2)
            worker.wait_for("PROBE RAN 2", "the worker to run a task after reconnecting")
            recovery_s = time.monotonic() - outage.ended_mono
            assert worker.alive(), worker.text()[-3000:]
        finally:
            stop_process_group(worker.proc, signal.SIGTERM, timeout=20)
    fault_report("valkey_under_a_held_task", duration_s=outage.duration_s, books=Books(), recovery_s=recovery_s)
