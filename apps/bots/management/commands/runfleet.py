"""`manage.py runfleet`: the fleet supervisor (see apps/bots/fleet.py)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from apps.bots.fleet import Fleet


class Command(BaseCommand):
    help = "Run one Celery worker per running bot, each with its own Vault identity, until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once",
            action="store_true",
            help="one reconcile pass, then stop what it started and exit",
        )
        parser.add_argument(
            "--no-market-data",
            action="store_true",
            help="start no market-data feed for this host: every bot reads the exchange by REST",
        )
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between passes (default 1)")
        parser.add_argument(
            "--host-label",
            default=None,
            help="run the bots with this host label (default: FLEET_HOST_LABEL, else 'local')",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        label = options["host_label"] or settings.FLEET_HOST_LABEL
        try:
            validate_slug(label)
        except ValidationError:
            raise CommandError(f"--host-label {label!r}: use letters, digits, '-' and '_' only") from None
        try:
            fleet = Fleet(process_vault=None, host_label=label, market_data=not options["no_market_data"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not fleet.warm_up():
            self.stderr.write("the bot worker template is not ready yet; bots start once it is")
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
        self.stdout.write(
            f"fleet supervisor running bots of host '{label}'; Ctrl-C stops it and every bot worker it started"
        )
        fleet.run(poll_s=options["poll"], stop=stop)
        self.stdout.write("fleet supervisor stopped")
