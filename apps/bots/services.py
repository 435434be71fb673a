"""Bots: create, edit (audited with a before/after diff), clone, start, stop, switch to live or paper."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.forms.models import model_to_dict
from django.http import HttpRequest

from apps.accounts.models import User
from apps.audit.services import record
from apps.bots.models import Bot
from apps.bots.selectors import global_halt_reason
from apps.core.exceptions import ApplicationError
from apps.trading import events as bot_events
from apps.trading.halt import global_halt_lock_shared

# What the before/after diff of an edit covers (state fields change through their own actions).
CONFIG_FIELDS = (
    "name", "account", "strategy", "params", "symbols", "mode", "paper_balance", "tick_interval_s",
    "max_order_notional", "max_position_notional", "max_open_orders", "max_orders_per_minute",
    "daily_loss_limit", "max_drawdown_pct", "size_anomaly_factor", "host",
)  # fmt: skip
Actor = User | str


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


def bot_update(*, bot: Bot, before: dict[str, Any], actor: Actor, request: HttpRequest | None = None) -> Bot:
    """Save an edited bot; `before` is `bot_snapshot()` taken before the form changed it."""
    with transaction.atomic():
        bot.save()
        bot.refresh_from_db()  # compare stored values with stored values (decimal places and all)
        diff = bot_diff(before, _snapshot(bot))
        if diff["after"]:
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
    if bot.halted:
        raise ApplicationError(f"{bot.name} is halted ({bot.halt_reason}); an admin must clear the halt first.")
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
        if Bot.objects.select_for_update().filter(pk=bot.pk).values_list("halted", flat=True).first() is not False:
            raise ApplicationError(f"{bot.name} is halted (or gone); an admin must clear the halt first.")
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
    if mode == Bot.Mode.LIVE and not (isinstance(actor, User) and actor.has_perm("accounts.enable_live_mode")):
        raise ApplicationError("Only an admin can switch a bot to live trading.")
    if bot.desired_state == Bot.Desired.RUNNING or bot.observed_state not in (Bot.Observed.STOPPED, Bot.Observed.ERROR):
        raise ApplicationError("Stop the bot before switching between paper and live.")
    before = bot.mode
    with transaction.atomic():
        Bot.objects.filter(pk=bot.pk).update(mode=mode)
        record(
            actor=actor, action="bot.mode_changed", target=bot, request=request,
            data={"before": {"mode": before}, "after": {"mode": mode}},
        )  # fmt: skip
    bot.refresh_from_db()


def bot_set_flatten_on_kill(*, bot: Bot, flatten: bool, actor: Actor, request: HttpRequest | None = None) -> None:
    """Whether the kill switch market-sells this bot's position. Admins only (the view also asks for step-up)."""
    if not (isinstance(actor, User) and actor.has_perm("accounts.enable_live_mode")):
        raise ApplicationError("Only an admin can change what the kill switch does with a bot's position.")
    before = bot.flatten_on_kill
    if before == flatten:
        return
    with transaction.atomic():
        Bot.objects.filter(pk=bot.pk).update(flatten_on_kill=flatten)
        record(
            actor=actor, action="bot.flatten_on_kill_changed", target=bot, request=request,
            data={"before": {"flatten_on_kill": before}, "after": {"flatten_on_kill": flatten}},
        )  # fmt: skip
    bot.refresh_from_db()
