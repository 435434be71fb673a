"""kill_cancels_out: what the fleet supervisor asks before the bookkeeping of workers a kill SIGKILLed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.bots import fleet
from apps.killswitch.models import KillRun
from apps.killswitch.selectors import kill_cancels_out

pytestmark = pytest.mark.django_db


def test_the_cancels_are_out_once_every_run_since_the_halt_has_its_cancel_step_or_ended() -> None:
    since = timezone.now()
    assert fleet.kill_cancels_out is kill_cancels_out  # set when the kill switch loads
    assert not kill_cancels_out(since)  # the run is not recorded yet
    run = KillRun.objects.create(scope=KillRun.Scope.ALL, reason="test")
    assert not kill_cancels_out(since)  # pending
    KillRun.objects.filter(pk=run.pk).update(
        status=KillRun.Status.RUNNING, steps=[{"name": "revoke", "ms": 1, "at_ms": 1, "detail": ""}]
    )
    assert not kill_cancels_out(since)  # running, still cancelling
    KillRun.objects.filter(pk=run.pk).update(
        steps=[{"name": "revoke", "ms": 1, "at_ms": 1, "detail": ""}, {"name": "cancel", "ms": 9, "at_ms": 9}]
    )
    assert kill_cancels_out(since)
    other = KillRun.objects.create(scope=KillRun.Scope.ALL, reason="second press")
    assert not kill_cancels_out(since)  # a later run, not yet cancelling
    KillRun.objects.filter(pk=other.pk).update(status=KillRun.Status.FAILED)
    assert kill_cancels_out(since)  # ended, with or without its cancel step
    assert not kill_cancels_out(timezone.now() + timedelta(seconds=1))  # no run since a later halt
