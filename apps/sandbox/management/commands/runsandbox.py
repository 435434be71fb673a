"""`manage.py runsandbox`: start the sandbox Binance-spot exchange (dev/test only).

Use the sandbox's own settings so that no database or Vault is needed:

    DJANGO_SETTINGS_MODULE=apps.sandbox.settings ./.venv/bin/python manage.py runsandbox --port 8765
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import secrets
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.sandbox.context import Options, Sandbox
from apps.sandbox.server import serve
from apps.sandbox.state import DEFAULT_RATE_LIMIT, KeySpec, Permissions, valid_key_format

logger = logging.getLogger("apps.sandbox")
KEY_ENV = "SANDBOX_API_KEY"
SECRET_ENV = "SANDBOX_API_SECRET"  # noqa: S105 - the name of a variable, not a secret


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Command(BaseCommand):
    help = "Run the local Binance-spot sandbox exchange (dev/test only; no real security)."
    # No system checks: they would import the project's models, and the sandbox must start
    # with no database at all.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument(
            "--api-key",
            default=os.environ.get(KEY_ENV) or None,
            help=f"create this key (64 letters/digits) with 10,000 USDT and 1 BTC (default: ${KEY_ENV})",
        )
        parser.add_argument(
            "--api-secret",
            default=os.environ.get(SECRET_ENV) or None,
            help=f"the secret of --api-key (default: ${SECRET_ENV}; the environment keeps it out of `ps`)",
        )
        parser.add_argument("--seed", type=int, help="seed of the price walk (default: random)")
        parser.add_argument("--rate-limit", type=int, default=DEFAULT_RATE_LIMIT, help="requests per minute per key")
        parser.add_argument("--min-move-ms", type=int, default=250, help="shortest pause between price moves")
        parser.add_argument("--max-move-ms", type=int, default=1000, help="longest pause between price moves")
        parser.add_argument(
            "--parent-pid",
            type=int,
            help="stop when this process is gone (test fixtures pass their own pid, so no sandbox outlives them)",
        )
        parser.add_argument(
            "--allow-remote",
            action="store_true",
            help="listen on a non-loopback address anyway (the admin routes still answer loopback only)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host: str = options["host"]
        if not is_loopback_host(host) and not options["allow_remote"]:
            raise CommandError(
                f"refusing to listen on {host}: the sandbox is a test exchange with no real security "
                "(it trusts any caller, keeps keys in memory and its money is free). "
                "Pass --allow-remote if you really want other machines to reach it."
            )
        api_key, secret = options["api_key"], options["api_secret"]
        if bool(api_key) != bool(secret):
            raise CommandError(f"--api-key and --api-secret (or ${KEY_ENV} and ${SECRET_ENV}) go together")
        if api_key and not valid_key_format(api_key):
            raise CommandError(
                f"--api-key (or ${KEY_ENV}) must be 64 ASCII letters and digits, like a Binance key; "
                f"got {len(api_key)} characters"
            )
        if options["min_move_ms"] <= 0 or options["max_move_ms"] < options["min_move_ms"]:
            raise CommandError("need 0 < --min-move-ms <= --max-move-ms")
        seed = options["seed"] if options["seed"] is not None else secrets.randbelow(2**31)
        keys = [KeySpec(api_key, secret, Permissions(can_read=True, can_trade=True))] if api_key else []
        sandbox = Sandbox(
            keys,
            Options(
                seed=seed,
                min_move_s=options["min_move_ms"] / 1000,
                max_move_s=options["max_move_ms"] / 1000,
                rate_limit=options["rate_limit"],
            ),
        )

        def ready(url: str) -> None:
            # Only a prefix of the key, and never its secret.
            key_note = f", key {api_key[:8]}... (secret not shown)" if api_key else ""
            logger.info("sandbox exchange (dev/test only) listening on %s, seed %d%s", url, seed, key_note)
            sys.stdout.write(f"SANDBOX READY {url}\n")
            sys.stdout.flush()

        try:
            asyncio.run(serve(sandbox, host, options["port"], ready, parent_pid=options["parent_pid"]))
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{options['port']}: {exc}") from exc
