"""`manage.py runfleet`: the fleet supervisor (see apps/bots/fleet.py)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.bots.fleet import Fleet


class Command(BaseCommand):
    help = "Run one Celery worker per running bot, each with its own Vault identity, until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="one reconcile pass, then stop what it started and exit",
        )
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between passes (default 1)")

    def handle(self, *args: Any, **options: Any) -> None:
        fleet = Fleet(process_vault=None)
        if options["once"]:
            # Workers die with their supervisor (PR_SET_PDEATHSIG), so a single pass cannot
            # leave them running: stop them in order instead.
            try:
                fleet.sync_once()
            finally:
                fleet.shutdown()
            return
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        self.stdout.write("fleet supervisor running; Ctrl-C stops it and every bot worker it started")
        fleet.run(poll_s=options["poll"], stop=stop)
        self.stdout.write("fleet supervisor stopped")
