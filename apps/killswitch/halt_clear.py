"""Clearing one bot's halt: an admin with a fresh code and a reason, warned while the halt's condition holds.

A bot halted by a breaker, the gate or an emergency stop stays stopped until an admin clears the
halt here (then it can be started again, through the same checks as any start). If what tripped
the halt still holds — its own loss beyond the limit, or a breaker trip still open for it —
clearing is refused with the figures unless the admin overrides explicitly. For a loss limit the
override also starts the bot's day and peak afresh from its equity now (the old figures go into
the audit entry): otherwise the same loss would halt it again on its next tick.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest

from apps.accounts.models import User
from apps.accounts.services import step_up_is_fresh
from apps.bots.halts import bot_halt_lift
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.core.text import resume_reason_problem
from apps.killswitch.models import BreakerTrip
from apps.trading.ledger import ledger_for, loss_breach
from apps.trading.models import BotLedger

CLEAR_PERM = "accounts.resume_after_kill"  # admins: clearing a halt loosens risk like a resume does


class HaltStillHolds(ApplicationError):
    """The halt's condition still holds; `conditions` says which, with the figures."""

    def __init__(self, conditions: list[str]) -> None:
        self.conditions = conditions
        super().__init__(
            "What halted the bot still holds: "
            + " ".join(conditions)
            + " Clear it anyway only if you accept that; nothing was changed."
        )


def halt_conditions(bot: Bot) -> list[str]:
    """What would still halt the bot now: its own loss limits, and breaker trips still open for it."""
    found = []
    breach = loss_breach(bot=bot, ledger=ledger_for(bot))
    if breach is not None:
        found.append(breach.message)
    for trip in BreakerTrip.objects.filter(cleared_at__isnull=True).order_by("tripped_at"):
        if bot.pk in (trip.data or {}).get("bots", []):
            found.append(f"Breaker {trip.get_kind_display()} is still tripped: {trip.message}")
    return found


def _fresh_start(ledger: BotLedger) -> dict[str, str | None]:
    before = {
        "day_start_equity": str(ledger.day_start_equity) if ledger.day_start_equity is not None else None,
        "peak_equity": str(ledger.peak_equity) if ledger.peak_equity is not None else None,
        "equity": str(ledger.last_equity) if ledger.last_equity is not None else None,
    }
    if ledger.last_equity is not None:
        BotLedger.objects.filter(pk=ledger.pk).update(
            day_start_equity=ledger.last_equity, peak_equity=ledger.last_equity
        )
    return before


def bot_halt_clear(
    *, bot: Bot, actor: User, reason: str, override: bool = False, request: HttpRequest | None = None
) -> list[str]:
    """Clear a bot's halt (it stays stopped). Returns the conditions overridden (empty if none held).

    Refused, with nothing changed, unless the actor is an admin with a fresh code, the reason is
    given, the bot is halted, and — when its condition still holds — `override` is set.
    """
    if not actor.has_perm(CLEAR_PERM):
        raise ApplicationError("Only an admin can clear a bot's halt.")
    if request is not None and not step_up_is_fresh(request):
        raise ApplicationError("Confirm with a fresh code first; nothing was changed.")
    problem = resume_reason_problem(reason)
    if problem is not None:
        raise ApplicationError(problem)
    with transaction.atomic():
        locked = Bot.objects.select_for_update().filter(pk=bot.pk).first()
        if locked is None or not locked.halted:
            raise ApplicationError(f"{bot.name} is not halted: there is nothing to clear.")
        conditions = halt_conditions(locked)
        if conditions and not override:
            raise HaltStillHolds(conditions)
        data: dict[str, object] = {"overridden": conditions}
        if conditions and loss_breach(bot=locked, ledger=ledger_for(locked)) is not None:
            data["loss_baseline_before"] = _fresh_start(ledger_for(locked))
        bot_halt_lift(bot=bot, actor=actor, reason=reason.strip(), data=data)
    return conditions
