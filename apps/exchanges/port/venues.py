"""Venues: how each exchange id is reached, and what is particular about it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ccxt
from django.conf import settings

from apps.exchanges.port.errors import ExchangeError


@dataclass(frozen=True)
class Venue:
    """How one exchange id is reached, and what is particular about it.

    `configure` runs on every new ccxt client (sync and async) before its first call. `key_permissions`
    names how the exchange tells what a key may do ("binance-api-restrictions") or None. `deadman` is
    "countdown" (Binance's spot `countdownCancelAll`, one countdown per symbol), "ccxt" (ccxt's
    `cancel_all_orders_after`, where the class has it) or None.
    """

    id: str
    ccxt_id: str
    configure: Callable[[Any], None] | None = None
    key_permissions: str | None = None
    deadman: str | None = "ccxt"
    transfer_history: bool = True
    note: str = ""


# Exchanges whose API says what a key may do (Binance's /sapi/v1/account/apiRestrictions).
BINANCE_API_RESTRICTIONS = "binance-api-restrictions"
_VENUES: dict[str, Venue] = {}
# Classes whose `cancel_all_orders_after` defaults to derivatives: our bots trade spot.
DEADMAN_PARAMS: dict[str, dict[str, str]] = {
    "bybit": {"type": "spot"},
    "bybiteu": {"type": "spot"},
    "bybitid": {"type": "spot"},
    "bingx": {"type": "spot"},
}
# Classes whose `cancel_all_orders_after` needs a symbol: one countdown per market.
DEADMAN_PER_SYMBOL = frozenset({"whitebit"})


def register_venue(venue: Venue) -> None:
    """Add (or replace) a venue that is not a ccxt exchange id as is, e.g. the local sandbox exchange."""
    if venue.ccxt_id not in ccxt.exchanges:
        raise ValueError(f"{venue.ccxt_id!r} is not a ccxt exchange")
    _VENUES[venue.id] = venue


def venue(exchange_id: str) -> Venue:
    found = _VENUES.get(exchange_id)
    if found is not None:
        return found
    if exchange_id not in ccxt.exchanges:
        raise ExchangeError(f"Unknown exchange {exchange_id!r}.")
    permissions = BINANCE_API_RESTRICTIONS if exchange_id in ("binance", "binanceus") else None
    return Venue(id=exchange_id, ccxt_id=exchange_id, key_permissions=permissions)


def supported_exchanges() -> list[str]:
    """Registered venues first (the sandbox where installed), then every ccxt exchange."""
    return [*sorted(_VENUES), *(e for e in ccxt.exchanges if e not in _VENUES)]


def required_credentials(exchange_id: str) -> list[str]:
    """The credential fields an exchange needs (apiKey and secret, sometimes password or uid)."""
    cls = getattr(ccxt, venue(exchange_id).ccxt_id)
    needed: dict[str, bool] = cls().requiredCredentials
    order = ["apiKey", "secret", "password", "uid"]
    return [name for name in order if needed.get(name)] + sorted(
        name for name, on in needed.items() if on and name not in order
    )


def ccxt_client(module: Any, exchange_id: str, credentials: Mapping[str, str], **options: Any) -> Any:
    v = venue(exchange_id)
    cls = getattr(module, v.ccxt_id)
    client = cls({**credentials, "enableRateLimit": True, "timeout": settings.EXCHANGE_TIMEOUT_MS, **options})
    if v.configure is not None:
        v.configure(client)
    return client


def order_params(client_order_id: str) -> dict[str, str]:
    # ccxt's unified name; each class maps it (binance: newClientOrderId / origClientOrderId).
    return {"clientOrderId": client_order_id}
