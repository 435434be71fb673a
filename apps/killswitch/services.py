"""The kill switch: halt first (in the database), then let the control worker clean up and report.

`kill_request` is what the panic button, a per-bot stop, a circuit breaker and `manage.py killswitch`
call. It commits the halt before anything else, so the order gate refuses every order from that
moment, whatever happens to Redis, the workers or the exchanges afterwards.
"""

from __future__ import annotations

import logging
import threading

from django.db import transaction
from django.http import HttpRequest

from apps.accounts.models import User
from apps.audit.services import record
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.killswitch.models import KillRun
from apps.trading.halt import global_halt_clear, global_halt_set

logger = logging.getLogger(__name__)
Actor = User | str


def kill_request(
    *, actor: Actor, reason: str, bot: Bot | None = None, via: str = "web", request: HttpRequest | None = None
) -> KillRun:
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Say why: the reason goes into the audit log and the kill report.")
    if bot is None:
        global_halt_set(reason=reason, actor=actor)  # commits; waits for any order in flight
    with transaction.atomic():
        if bot is not None:
            Bot.objects.filter(pk=bot.pk).update(halted=True, halt_reason=f"Stopped by kill: {reason}"[:300],
                                                 desired_state=Bot.Desired.STOPPED)  # fmt: skip
        else:
            Bot.objects.update(desired_state=Bot.Desired.STOPPED)
        run = KillRun.objects.create(
            scope=KillRun.Scope.BOT if bot else KillRun.Scope.ALL, bot=bot, reason=reason[:500],
            requested_by=actor if isinstance(actor, User) else None, requested_via=via,
        )  # fmt: skip
        record(
            actor=actor, action="killswitch.pressed", target=run, request=request,
            data={"scope": run.scope, "bot": bot.pk if bot else None, "reason": reason, "via": via},
        )  # fmt: skip
        # In a thread: with the broker down, queueing blocks for seconds, and the operator's page must not
        # wait for it (the halt is already committed; the control worker's poller picks the run anyway).
        transaction.on_commit(lambda: threading.Thread(target=_enqueue, args=(run.pk,), daemon=True).start())
    return run


def _enqueue(run_id: int) -> None:
    # With the broker down the run stays pending in the database; the control worker's poller (and
    # `manage.py killswitch`) execute pending runs without Redis.
    try:
        from apps.killswitch.tasks import kill_execute_task

        kill_execute_task.apply_async(args=(run_id,), retry=False)
    except Exception as exc:
        logger.warning("kill run %s not queued (%s); the control worker picks it from the database", run_id,
                       type(exc).__name__)  # fmt: skip


def trading_resume(*, actor: User, reason: str, request: HttpRequest | None = None) -> None:
    """Lift the global halt. Bots stay stopped until each is started again."""
    if not actor.has_perm("accounts.resume_after_kill"):
        raise ApplicationError("Only an admin can resume trading after a kill.")
    reason = reason.strip()
    if not reason:
        raise ApplicationError("Write down why it is safe to resume; it goes into the audit log.")
    global_halt_clear(actor=actor)
    record(actor=actor, action="killswitch.resumed", request=request, data={"reason": reason})
