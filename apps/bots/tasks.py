"""The bot tick: a short task that runs one strategy step and re-enqueues itself on `bot.<id>`.

Arguments are the bot id and the id of the tick chain started by this worker process: a tick
left over from an earlier process of the same bot (restored by the broker after a crash) carries
another chain id and is dropped, so one bot never runs two tick chains. Never a secret in args.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.utils import timezone

from apps.bots import runtime
from apps.bots.models import Bot

logger = logging.getLogger(__name__)


def _tick_run() -> Any:
    # Imported lazily: the trading app is developed alongside and may not be there yet.
    try:
        from apps.trading.tick import tick_run
    except ImportError:
        return None
    return tick_run


@shared_task(name="apps.bots.tasks.bot_tick_task", ignore_result=True)
def bot_tick_task(bot_id: int, chain: str | None = None) -> None:
    rt = runtime.current()
    if rt is None or rt.bot_id != bot_id or chain != rt.chain:
        logger.info("bot %s: dropping a tick that is not this worker's (chain %s)", bot_id, chain)
        return
    bot = Bot.objects.select_related("account").filter(pk=bot_id).first()
    if bot is None or bot.desired_state != Bot.Desired.RUNNING or bot.halted:
        logger.info("bot %s: not running any more; ticks stop", bot_id)
        return
    Bot.objects.filter(pk=bot_id).update(last_heartbeat=timezone.now())
    tick_run = _tick_run()
    if tick_run is not None:
        try:
            tick_run(bot=bot, client=runtime.get_exchange_client())
        except Exception as exc:
            # Error kind only: exchange errors may quote request details; the next tick retries.
            logger.warning("bot %s: tick failed (%s)", bot_id, type(exc).__name__)
    bot_tick_task.apply_async(args=(bot_id,), kwargs={"chain": chain}, queue=bot.queue, countdown=bot.tick_interval_s)
