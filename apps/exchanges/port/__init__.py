"""The exchange port: the one module that imports ccxt, and the only place exchange-specific details live.

Everything else talks to an exchange through `Exchange` (synchronous: bot ticks, key checks, snapshots),
`AsyncExchange` opened from an `AsyncSession` (many accounts at once: the kill switch) or `MarketStream`
(public market data over the exchange's websocket: the per-host market-data feed). Both speak in the
project's own values (Decimal amounts, `RemoteOrder`, `RemoteTrade`, `Balances`) and raise the project's
own errors (`ExchangeError` and its kinds), whose messages carry the exchange's reason but never a URL, a
signature or a key. Calls that are safe to repeat are retried with backoff on network errors, timeouts, 5xx
(a gateway's page or the exchange's own "internal error") and rate limits (waiting the exchange's Retry-After),
on the synchronous and the asynchronous path alike; a -1021 (clock) is retried once after syncing the time
difference. Placing an order is never repeated blindly: after an answer that leaves its outcome unknown, the
order is looked up by its client order id and adopted if it is there, and only sent again (same id) when the
exchange says it is not; `ExchangeUnavailable` from it means the outcome is still unknown.

A venue is how one exchange id is reached: which ccxt class, how its client is configured, which
exchange-specific parameters its calls need (the key-permission endpoint, the dead-man's switch). Real
exchanges are their ccxt class as is; the local sandbox exchange registers itself as a venue from its own
app (`apps.sandbox`), so that production, which does not install that app, does not know it.

A client is built from credentials handed in by the caller (read from Vault by a process allowed to, or typed
by an admin): this module never fetches a secret, and a client never shows its credentials in its repr.
"""

from apps.exchanges.port.aio import AsyncExchange, AsyncSession
from apps.exchanges.port.errors import (
    ClockSkew,
    ExchangeError,
    ExchangeUnavailable,
    KeyRejected,
    OrderNotFound,
    OrderRejected,
    PermissionRefused,
    safe_reason,
    translate,
)
from apps.exchanges.port.stream import MarketStream
from apps.exchanges.port.sync import Exchange
from apps.exchanges.port.values import (
    Balances,
    Candle,
    KeyPermissions,
    Market,
    RemoteOrder,
    RemoteTrade,
    Ticker,
    Transfer,
)
from apps.exchanges.port.venues import (
    BINANCE_API_RESTRICTIONS,
    Venue,
    register_venue,
    required_credentials,
    supported_exchanges,
    venue,
)

__all__ = [
    "BINANCE_API_RESTRICTIONS",
    "AsyncExchange",
    "AsyncSession",
    "Balances",
    "Candle",
    "ClockSkew",
    "Exchange",
    "ExchangeError",
    "ExchangeUnavailable",
    "KeyPermissions",
    "KeyRejected",
    "Market",
    "MarketStream",
    "OrderNotFound",
    "OrderRejected",
    "PermissionRefused",
    "RemoteOrder",
    "RemoteTrade",
    "Ticker",
    "Transfer",
    "Venue",
    "register_venue",
    "required_credentials",
    "safe_reason",
    "supported_exchanges",
    "translate",
    "venue",
]
