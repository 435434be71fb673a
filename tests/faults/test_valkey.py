"""Fault 2: Valkey (Celery's broker, the live feed's wake-ups) restarted under a trading fleet.

Valkey is stopped for OUTAGE_S while the bots trade, a viewer's dashboard socket is open and the console keeps
publishing events (the fleet's, the workers' log lines, one of the test's own), then started again on the same
port. Every worker must reconnect by itself (the same processes: none restarted), each bot's ticks resume at
once (no gap between two ticks much longer than the outage), the socket receives every event stored meanwhile,
once and in order, and the books agree: nothing lost or doubled.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.bots import events as bot_events
from apps.events.models import Event
from tests.faults.support import FaultScenario, LiveSocket, Outage, fault_report, server_stopped
from tests.harness import Harness

pytestmark = pytest.mark.django_db(transaction=True)

FAULT_TIMEOUT_S = 200.0
OUTAGE_S = 10.0
# A bot's ticks may pause for the outage, plus the worker's reconnection and one tick interval or two.
TICK_GAP_SLACK_S = 6.0


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
