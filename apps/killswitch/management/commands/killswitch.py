"""`manage.py killswitch [--bot ID] --reason TEXT`: halt and clean up from a shell.

Needs only PostgreSQL and Vault (the control token in VAULT_TOKEN): no web server, no Redis, no
Celery. The halt commits first, whatever the reason says (it is cleaned and cut, never refused);
a press while a kill of the same scope is running joins that run. Exits 0 only when the run ended
"done" (every order cancelled and verified after the last worker stopped), 1 otherwise, and 2 when
the halt is committed but the run could not even be recorded.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.bots.models import Bot
from apps.killswitch.models import KillRun
from apps.killswitch.report import balances_table
from apps.killswitch.runner import kill_execute
from apps.killswitch.services import kill_press

WAIT_FOR_OTHER_S = 120
BIGINT_MAX = 2**63 - 1


def _bot_id(raw: str) -> int:
    value = int(raw)  # argparse turns a ValueError into a usage error, before anything changes
    if not 1 <= value <= BIGINT_MAX:
        raise ValueError(raw)
    return value


class Command(BaseCommand):
    help = "Press the kill switch: halt all trading (or one bot), cancel open orders, print the report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bot", type=_bot_id, default=None, help="Stop only this bot (id) instead of everything.")
        parser.add_argument("--reason", required=True, help="Why: goes into the audit log and the report.")

    def handle(self, *args: Any, **options: Any) -> None:
        bot = None
        if options["bot"] is not None:
            bot = Bot.objects.filter(pk=options["bot"]).first()
            if bot is None:
                raise CommandError(f"No bot with id {options['bot']}; nothing was halted.")
        # No broker needed: the kill runs right here. (The press also tries to queue it from a
        # background thread; if a control worker claims it first, wait for that worker's report.)
        press = kill_press(actor="system:shell", reason=options["reason"], bot=bot, via="shell")
        for failure in press.failures:
            self.stderr.write(f"PROBLEM: {failure}")
        if press.run is None:
            self.stderr.write("Trading is halted, but no kill run was recorded: no order was cancelled.")
            raise SystemExit(2)
        if press.joined:
            self.stdout.write(f"Kill run #{press.run.pk} was already in progress; this press joined it.")
        run = kill_execute(run_id=press.run.pk)
        deadline = time.monotonic() + WAIT_FOR_OTHER_S
        while run.status == KillRun.Status.RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)
            run.refresh_from_db()
        self.stdout.write(report_text(run))
        if run.status != KillRun.Status.DONE:
            raise SystemExit(1)


def report_text(run: KillRun) -> str:
    lines = [
        f"Kill run #{run.pk} ({run.get_scope_display()}): {run.get_status_display()}",
        f"Duration: {run.duration_ms} ms (from the click to verified)",
    ]
    if run.workers_stopped_ms is not None:
        lines.append(f"Workers stopped: {run.workers_stopped}, {run.workers_stopped_ms} ms after the click")
    lines += run.takeover_lines
    lines += [f"  {step['name']:<9} {step['ms']:>6} ms  {step['detail']}" for step in run.steps]
    paper = f" ({run.paper_orders_cancelled} paper)" if run.paper_orders_cancelled else ""
    lines += [f"Orders cancelled: {run.orders_cancelled}{paper}", f"Orders still open: {run.still_open_text}"]
    for account in balances_table(run):
        label = account["account"]
        if account["reached"] is False:
            lines.append(f"NOT REACHED: {label}: its open orders are unknown; check it on the exchange by hand")
        else:
            held = ", ".join(f"{row['asset']} {row['total']}" for row in account["assets"]) or "none held"
            lines.append(f"Balances of {label}: {held}")
    lines += [f"PROBLEM: {p}" for p in run.problems]
    return "\n".join(lines) + "\n"
