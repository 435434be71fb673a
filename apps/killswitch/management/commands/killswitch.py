"""`manage.py killswitch [--bot ID] --reason TEXT`: halt and clean up from a shell.

Needs only PostgreSQL and Vault (the control token in VAULT_TOKEN): no web server, no Redis, no
Celery. Exits 0 when no order is left open, 1 otherwise.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.bots.models import Bot
from apps.killswitch.engine import kill_execute
from apps.killswitch.models import KillRun
from apps.killswitch.services import kill_request

WAIT_FOR_OTHER_S = 120


class Command(BaseCommand):
    help = "Press the kill switch: halt all trading (or one bot), cancel open orders, print the report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", type=int, default=None, help="Stop only this bot (id) instead of everything.")
        parser.add_argument("--reason", required=True, help="Why: goes into the audit log and the report.")

    def handle(self, *args: Any, **options: Any) -> None:
        bot = None
        if options["bot"] is not None:
            bot = Bot.objects.filter(pk=options["bot"]).first()
            if bot is None:
                raise CommandError(f"No bot with id {options['bot']}.")
        # No broker needed: the kill runs right here. (kill_request also tries to queue it from a
        # background thread; if a control worker claims it first, wait for that worker's report.)
        run = kill_request(actor="system:shell", reason=options["reason"], bot=bot, via="shell")
        run = kill_execute(run_id=run.pk)
        deadline = time.monotonic() + WAIT_FOR_OTHER_S
        while run.status == KillRun.Status.RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)
            run.refresh_from_db()
        self.stdout.write(report_text(run))
        if run.orders_still_open or run.status not in (KillRun.Status.DONE, KillRun.Status.FAILED):
            raise SystemExit(1)


def report_text(run: KillRun) -> str:
    lines = [
        f"Kill run #{run.pk} ({run.get_scope_display()}): {run.get_status_display()}",
        f"Duration: {run.duration_ms} ms",
    ]
    lines += [f"  {step['name']:<9} {step['ms']:>6} ms  {step['detail']}" for step in run.steps]
    lines += [f"Orders cancelled: {run.orders_cancelled}", f"Orders still open: {run.orders_still_open}"]
    for account_id, info in sorted(run.balances_after.items()):
        lines.append(f"Balances of {info.get('label', account_id)}: {info.get('total', {})}")
    lines += [f"PROBLEM: {p}" for p in run.problems]
    return "\n".join(lines) + "\n"
