"""Reads of the kill switch: which bots a resume may start again; whether a kill's cancels are out."""

from __future__ import annotations

from datetime import datetime

from apps.bots.halts import global_halt_state
from apps.bots.models import Bot, TradingHalt
from apps.killswitch.models import KillRun


def bots_to_restart(halt: TradingHalt | None = None) -> list[Bot]:
    """The bots the global kills of the current halt stopped, that could run again: not archived, still stopped.

    Empty when nothing is halted. Bots stopped by a per-bot kill are not offered: their own halt
    stays until an admin clears it on the bot's page.
    """
    halt = halt or global_halt_state()
    if not halt.active:
        return []
    runs = KillRun.objects.filter(scope=KillRun.Scope.ALL)
    if halt.since is not None:
        runs = runs.filter(created_at__gte=halt.since)
    ids = {pk for stopped in runs.values_list("bots_stopped", flat=True) for pk in stopped}
    bots = Bot.objects.select_related("account").filter(
        pk__in=ids, archived_at__isnull=True, desired_state=Bot.Desired.STOPPED
    )
    return list(bots.order_by("name", "pk"))


def kill_cancels_out(since: datetime) -> bool:
    """Whether the kill that halted at `since` has sent its cancels: a run recorded since then, and none of those
    still pending or running without its cancel step. The fleet supervisor asks, to do its bookkeeping after them.
    """
    runs = KillRun.objects.filter(created_at__gte=since)
    if not runs.exists():
        return False  # the run is committed just after the halt: not yet
    open_runs = runs.filter(status__in=(KillRun.Status.PENDING, KillRun.Status.RUNNING))
    return not open_runs.exclude(steps__contains=[{"name": "cancel"}]).exists()
