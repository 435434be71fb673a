"""The sandbox exchange as a venue of the exchange port: Binance's API at SANDBOX_URL, in local and test runs only.

Registered by this app's config; production does not install the app, so it does not know "sandbox".
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.exchanges import port
from apps.sandbox.ccxt_config import point_at_sandbox

EXCHANGE_ID = "sandbox"


def _configure(client: Any) -> None:
    if not settings.SANDBOX_URL:
        raise port.ExchangeUnavailable("The sandbox exchange is not running (SANDBOX_URL is not set).")
    point_at_sandbox(client, settings.SANDBOX_URL)


VENUE = port.Venue(
    id=EXCHANGE_ID,
    ccxt_id="binance",
    configure=_configure,
    key_permissions=port.BINANCE_API_RESTRICTIONS,
    deadman="countdown",
    transfer_history=False,
    note="The sandbox exchange keeps no deposit or withdrawal history.",
)


def register() -> None:
    port.register_venue(VENUE)
