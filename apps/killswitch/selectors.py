"""Reads of the kill switch: which bots a resume may start again."""

from __future__ import annotations

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
