"""Bots: create, edit (audited with a before/after diff), clone, start, stop (one or many), switch to live
or paper, archive and unarchive.

Loosening a live bot (another account, a higher limit, more symbols, another strategy or other
parameters, another host, faster ticks) is an admin's act behind a fresh code; an operator may
tighten a live bot's limits, stop it, and edit a paper bot freely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.forms.models import model_to_dict
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import User
from apps.accounts.services import step_up_is_fresh
from apps.audit.services import record
from apps.bots import events as bot_events
from apps.bots.halts import global_halt_lock_shared, global_halt_reason
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.strategies import REGISTRY
from apps.strategies.base import ParamError

logger = logging.getLogger(__name__)

# What the before/after diff of an edit covers (state fields change through their own actions).
CONFIG_FIELDS = (
    "name",
    "account",
    "strategy",
    "params",
    "symbols",
    "mode",
    "paper_balance",
    "tick_interval_s",
    "max_order_notional",
    "max_position_notional",
    "max_open_orders",
    "max_orders_per_minute",
    "daily_loss_limit",
    "max_drawdown_pct",
    "size_anomaly_factor",
    "host",
)
# The fields an edit writes; state fields (desired/observed state, halt, mode) change only through
# their own actions, so an edit saved just after a halt cannot clear it.
EDIT_FIELDS = (
    "name",
    "account",
    "strategy",
    "params",
    "symbols",
    "paper_balance",
    "tick_interval_s",
    "max_order_notional",
    "max_position_notional",
    "max_open_orders",
    "max_orders_per_minute",
    "daily_loss_limit",
    "max_drawdown_pct",
    "size_anomaly_factor",
    "host",
    "updated_at",
)
# Limits where a higher value lets the bot risk more.
RISK_LIMITS = (
    "max_order_notional",
    "max_position_notional",
    "max_open_orders",
    "max_orders_per_minute",
    "daily_loss_limit",
    "max_drawdown_pct",
    "size_anomaly_factor",
)
LOOSENING_LABELS = {
    "account": "exchange account",
    "symbols": "new symbols",
    "tick_interval_s": "faster ticks",
    "max_order_notional": "max order size",
    "max_position_notional": "max position",
    "max_open_orders": "max open orders",
    "max_orders_per_minute": "orders per minute",
    "daily_loss_limit": "daily loss limit",
    "max_drawdown_pct": "max drawdown",
    "size_anomaly_factor": "size anomaly factor",
    "strategy": "strategy",
    "params": "strategy parameters",
    "host": "host",
}
LIVE_PERM = "accounts.enable_live_mode"
Actor = User | str


class LooseningRefusedError(ApplicationError):
    """An edit would loosen a live bot and the actor may not do that; `fields` names what it loosens."""

    def __init__(self, message: str, *, fields: list[str]) -> None:
        super().__init__(message, extra={"fields": fields})
        self.fields = fields


class StepUpNeededError(LooseningRefusedError):
    """An admin may loosen the live bot, but only with a fresh code: send them through step-up."""


def _snapshot(bot: Bot) -> dict[str, Any]:
    data = model_to_dict(bot, fields=CONFIG_FIELDS)
    data["account"] = str(bot.account_id)
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in data.items()}


def bot_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    changed = sorted(k for k in after if before.get(k) != after.get(k))
    return {"before": {k: before.get(k) for k in changed}, "after": {k: after[k] for k in changed}}


def bot_create(*, bot: Bot, actor: Actor, request: HttpRequest | None = None) -> Bot:
    """Save a new bot (validated by the form): always stopped, and in paper mode until an admin switches it."""
    bot.mode = Bot.Mode.PAPER
    bot.desired_state = Bot.Desired.STOPPED
    bot.observed_state = Bot.Observed.STOPPED
    bot.created_by = actor if isinstance(actor, User) else None
    with transaction.atomic():
        bot.save()
        record(actor=actor, action="bot.created", target=bot, request=request, data={"after": _snapshot(bot)})
    return bot


def _params_differ(stored: Bot, edited: Bot) -> bool:
    """Whether the strategy parameters differ in value (not in spelling: "10" and "10.0" are the same)."""
    strategy = REGISTRY.get(edited.strategy)
    if strategy is None:
        return True
    try:
        return bool(strategy.clean(stored.params) != strategy.clean(edited.params))
    except ParamError:
        return True


def bot_loosenings(*, stored: Bot, edited: Bot) -> list[str]:
    """What an edit loosens on a live bot (field names, in form order); nothing for a paper bot.

    Lower limits, fewer symbols, another name, slower ticks and the paper balance tighten or are
    neutral; everything else that changes here lets the bot do more with real money.
    """
    if stored.mode != Bot.Mode.LIVE:
        return []
    loosened = []
    if edited.account_id != stored.account_id:
        loosened.append("account")
    if set(edited.symbols) - set(stored.symbols):
        loosened.append("symbols")
    if edited.tick_interval_s < stored.tick_interval_s:
        loosened.append("tick_interval_s")
    loosened += [name for name in RISK_LIMITS if getattr(edited, name) > getattr(stored, name)]
    if edited.strategy != stored.strategy:
        loosened.append("strategy")
    elif _params_differ(stored, edited):
        loosened.append("params")
    if edited.host != stored.host:
        loosened.append("host")
    return loosened


def _authorize_loosening(*, loosened: list[str], actor: Actor, request: HttpRequest | None) -> None:
    names = ", ".join(LOOSENING_LABELS[name] for name in loosened)
    if not (isinstance(actor, User) and actor.has_perm(LIVE_PERM)):
        raise LooseningRefusedError(
            f"Only an admin can loosen a live bot; this change loosens: {names}. You may lower its limits, remove "
            "symbols or stop it. Nothing was saved.",
            fields=loosened,
        )
    if request is None or not step_up_is_fresh(request):
        raise StepUpNeededError(
            f"This change loosens a live bot ({names}): confirm it with a fresh code. Nothing was saved yet.",
            fields=loosened,
        )


def bot_update(*, bot: Bot, actor: Actor, request: HttpRequest | None = None) -> Bot:
    """Save an edited bot (validated by the form), audited with a before/after diff of its stored values.

    On a live bot, a change that loosens it needs an admin with a fresh code (LooseningRefusedError,
    StepUpNeededError; nothing is saved). The stored row is locked and compared, not the page the
    user saw, so a bot switched to live meanwhile is judged as live.
    """
    with transaction.atomic():
        stored = Bot.objects.select_for_update().get(pk=bot.pk)
        if stored.archived_at is not None:
            raise ApplicationError(f"{stored.name} is archived: an admin must unarchive it first. Nothing was saved.")
        loosened = bot_loosenings(stored=stored, edited=bot)
        if loosened:
            _authorize_loosening(loosened=loosened, actor=actor, request=request)
        before = _snapshot(stored)
        bot.save(update_fields=EDIT_FIELDS)
        bot.refresh_from_db()  # compare stored values with stored values (decimal places and all)
        diff: dict[str, Any] = bot_diff(before, _snapshot(bot))
        if diff["after"]:
            if loosened:
                diff["loosened"] = loosened
            record(actor=actor, action="bot.updated", target=bot, request=request, data=diff)
    return bot


def bot_snapshot(bot: Bot) -> dict[str, Any]:
    return _snapshot(bot)


def bot_clone(*, bot: Bot, actor: Actor, request: HttpRequest | None = None) -> Bot:
    name, n = f"{bot.name} (copy)", 2
    while Bot.objects.filter(name=name).exists():
        name, n = f"{bot.name} (copy {n})", n + 1
    clone = Bot(**{f: getattr(bot, f) for f in CONFIG_FIELDS if f != "name"}, name=name)
    with transaction.atomic():
        bot_create(bot=clone, actor=actor, request=request)
        record(actor=actor, action="bot.cloned", target=clone, request=request, data={"from": bot.pk})
    return clone


def bot_start(*, bot: Bot, actor: Actor, request: HttpRequest | None = None) -> None:
    if bot.archived_at is not None:
        raise ApplicationError(f"{bot.name} is archived: an admin must unarchive it before it can start.")
    if bot.halted:
        raise ApplicationError(
            f"{bot.name} is halted ({bot.halt_reason}); an admin must clear the halt first (on the bot's page)."
        )
    reason = global_halt_reason()
    if reason is not None:
        raise ApplicationError(f"Trading is halted for every bot ({reason}); nothing can start until an admin resumes.")
    if bot.mode == Bot.Mode.LIVE and bot.account.last_check_ok is False:
        raise ApplicationError(f"The key of {bot.account.label} failed its last check; fix it before trading live.")
    with transaction.atomic():
        # Checked again under the locks a kill takes (halt row, then bot row): a kill pressed since the
        # checks above wins, and the start is refused instead of leaving the bot desired-running.
        halted_everywhere, halt_reason = global_halt_lock_shared()
        if halted_everywhere:
            raise ApplicationError(f"Trading is halted for every bot ({halt_reason or 'halted'}); nothing can start.")
        locked = Bot.objects.select_for_update().filter(pk=bot.pk).values_list("halted", "archived_at").first()
        if locked is None or locked[0] is not False:
            raise ApplicationError(
                f"{bot.name} is halted (or gone); an admin must clear the halt first (on the bot's page)."
            )
        if locked[1] is not None:  # archived since the page was loaded
            raise ApplicationError(f"{bot.name} is archived: an admin must unarchive it before it can start.")
        Bot.objects.filter(pk=bot.pk).update(desired_state=Bot.Desired.RUNNING)
        record(actor=actor, action="bot.start_requested", target=bot, request=request, data={"mode": bot.mode})
        bot_events.bot_state(bot.pk)
    bot.refresh_from_db()


def bot_stop(*, bot: Bot, actor: Actor, request: HttpRequest | None = None) -> None:
    with transaction.atomic():
        Bot.objects.filter(pk=bot.pk).update(desired_state=Bot.Desired.STOPPED)
        record(actor=actor, action="bot.stop_requested", target=bot, request=request)
        bot_events.bot_state(bot.pk)
    bot.refresh_from_db()


def bot_set_mode(*, bot: Bot, mode: str, actor: Actor, request: HttpRequest | None = None) -> None:
    """Switch between paper and live. Live needs an admin (the view also asks for step-up) and a stopped bot."""
    if mode not in Bot.Mode.values:
        raise ApplicationError("Unknown mode.")
    if bot.archived_at is not None:
        raise ApplicationError(f"{bot.name} is archived: an admin must unarchive it first.")
    if mode == Bot.Mode.LIVE and not (isinstance(actor, User) and actor.has_perm("accounts.enable_live_mode")):
        raise ApplicationError("Only an admin can switch a bot to live trading.")
    if bot.desired_state == Bot.Desired.RUNNING or bot.observed_state not in (Bot.Observed.STOPPED, Bot.Observed.ERROR):
        raise ApplicationError("Stop the bot before switching between paper and live.")
    before = bot.mode
    with transaction.atomic():
        Bot.objects.filter(pk=bot.pk).update(mode=mode)
        record(
            actor=actor,
            action="bot.mode_changed",
            target=bot,
            request=request,
            data={"before": {"mode": before}, "after": {"mode": mode}},
        )
    bot.refresh_from_db()


def bot_set_flatten_on_kill(*, bot: Bot, flatten: bool, actor: Actor, request: HttpRequest | None = None) -> None:
    """Whether the kill switch market-sells this bot's position. Admins only (the view also asks for step-up)."""
    if not (isinstance(actor, User) and actor.has_perm("accounts.enable_live_mode")):
        raise ApplicationError("Only an admin can change what the kill switch does with a bot's position.")
    if bot.archived_at is not None:
        raise ApplicationError(f"{bot.name} is archived: an admin must unarchive it first.")
    before = bot.flatten_on_kill
    if before == flatten:
        return
    with transaction.atomic():
        Bot.objects.filter(pk=bot.pk).update(flatten_on_kill=flatten)
        record(
            actor=actor,
            action="bot.flatten_on_kill_changed",
            target=bot,
            request=request,
            data={"before": {"flatten_on_kill": before}, "after": {"flatten_on_kill": flatten}},
        )
    bot.refresh_from_db()


# --- Fleet actions: start or stop several bots at once -------------------------------------------

FLEET_ACTIONS = ("start", "stop")


@dataclass(frozen=True)
class FleetOutcome:
    """What one bot of a fleet action did: `ok` and a sentence for the page (the refusal's reason if not)."""

    bot_id: int
    name: str
    ok: bool
    message: str


def bots_fleet_act(
    *, bot_ids: Sequence[int], action: str, actor: Actor, request: HttpRequest | None = None
) -> list[FleetOutcome]:
    """Start or stop each selected bot through bot_start / bot_stop (their checks, one audit entry each).

    Bad input (no bot, an unknown action, an id that names no bot) changes nothing and raises
    ApplicationError. Otherwise every bot is tried on its own: one bot's refusal (halted, archived,
    a failed key check) neither stops nor undoes the others, and each outcome is reported.
    """
    if action not in FLEET_ACTIONS:
        raise ApplicationError(f"Unknown fleet action {action!r}: choose start or stop.")
    wanted = list(dict.fromkeys(bot_ids))  # keep the order, drop repeats
    if not wanted:
        raise ApplicationError("Select at least one bot to start or stop; nothing was changed.")
    bots = {bot.pk: bot for bot in Bot.objects.select_related("account").filter(pk__in=wanted)}
    missing = [str(pk) for pk in wanted if pk not in bots]
    if missing:
        raise ApplicationError(f"No bot with id {', '.join(missing)}; nothing was changed.")
    outcomes = []
    for pk in wanted:
        bot = bots[pk]
        try:
            if action == "start":
                bot_start(bot=bot, actor=actor, request=request)
            else:
                bot_stop(bot=bot, actor=actor, request=request)
        except ApplicationError as exc:
            outcomes.append(FleetOutcome(pk, bot.name, False, f"refused: {exc.message}"))
        except Exception:
            # Say so and go on with the others rather than fail the page after some bots already moved:
            # whether this one did is not known here, so the page says "unknown", never "refused".
            logger.exception("fleet %s of bot %s failed", action, pk)
            outcomes.append(FleetOutcome(pk, bot.name, False, "unknown: it failed unexpectedly; check its page."))
        else:
            done = "start requested" if action == "start" else "stop requested"
            outcomes.append(FleetOutcome(pk, bot.name, True, done))
    return outcomes


# --- Archive ---------------------------------------------------------------------------------------


def bot_archive(
    *, bot: Bot, actor: Actor, open_orders: Callable[[int], int], request: HttpRequest | None = None
) -> None:
    """Archive a stopped bot with no open orders: kept for the audit log and reviews, out of the lists.

    `open_orders(bot_id)` counts the bot's open orders (the trading app, a floor above, knows them);
    it is asked with the bot's row locked, so a start cannot slip in between the check and the archive.
    """
    with transaction.atomic():
        stored = Bot.objects.select_for_update().filter(pk=bot.pk).first()
        if stored is None:
            raise ApplicationError("That bot no longer exists.")
        if stored.archived_at is not None:
            raise ApplicationError(f"{stored.name} is already archived.")
        if stored.desired_state != Bot.Desired.STOPPED or stored.observed_state not in (
            Bot.Observed.STOPPED,
            Bot.Observed.ERROR,
        ):
            raise ApplicationError(
                f"Only a stopped bot can be archived: stop {stored.name} and wait until it has stopped "
                f"(now {stored.get_observed_state_display().lower()}, wanted {stored.desired_state})."
            )
        count = open_orders(stored.pk)
        if count:
            raise ApplicationError(
                f"{stored.name} still has {count} open order{'s' if count != 1 else ''}: cancel "
                f"{'them' if count != 1 else 'it'} before archiving."
            )
        now = timezone.now()
        Bot.objects.filter(pk=stored.pk).update(archived_at=now)
        record(actor=actor, action="bot.archived", target=stored, request=request, data={"archived_at": now})
    bot.refresh_from_db()


def bot_unarchive(*, bot: Bot, actor: Actor, request: HttpRequest | None = None) -> None:
    """Bring an archived bot back to the lists, still stopped. Admins only."""
    if not (isinstance(actor, User) and actor.has_perm(LIVE_PERM)):
        raise ApplicationError("Only an admin can unarchive a bot.")
    with transaction.atomic():
        stored = Bot.objects.select_for_update().filter(pk=bot.pk).first()
        if stored is None:
            raise ApplicationError("That bot no longer exists.")
        if stored.archived_at is None:
            raise ApplicationError(f"{stored.name} is not archived.")
        Bot.objects.filter(pk=stored.pk).update(archived_at=None)
        record(
            actor=actor,
            action="bot.unarchived",
            target=stored,
            request=request,
            data={"archived_at": stored.archived_at},
        )
    bot.refresh_from_db()
