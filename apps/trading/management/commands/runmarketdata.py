"""`manage.py runmarketdata`: the host's market-data feed (see apps/trading/marketdata.py).

Started by the fleet supervisor (`manage.py runfleet`) beside its bot workers, with the same host label;
it stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_slug

from apps.trading.marketdata import feed_run


class Command(BaseCommand):
    help = "Stream the market data of the symbols this host's running bots trade into Valkey, until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host-label",
            default=None,
            help="feed the bots with this host label (default: FLEET_HOST_LABEL, else 'local')",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        label = options["host_label"] or settings.FLEET_HOST_LABEL
        try:
            validate_slug(label)
        except ValidationError:
            raise CommandError(f"--host-label {label!r}: use letters, digits, '-' and '_' only") from None
        asyncio.run(self._run(label))

    async def _run(self, label: str) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        self.stdout.write(f"market-data feed running for the bots of host '{label}'")
        await feed_run(host=label, stop=stop)
        self.stdout.write("market-data feed stopped")
