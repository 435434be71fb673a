"""The one module that builds ccxt clients.

A client is built from an exchange id and credentials handed in by the caller (read from
Vault by a process allowed to, or typed by an admin): this module never fetches a secret.
Calls go through `call()`: bounded retries with backoff for network errors and rate limits
(HTTP 429/418), and ccxt's exceptions mapped to the domain errors below, whose messages carry
the exchange's reason but never a URL, signature or key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import ccxt
import ccxt.async_support
import ccxt.pro
from django.conf import settings

from apps.core.exceptions import ApplicationError

logger = logging.getLogger(__name__)
SANDBOX = "sandbox"
T = TypeVar("T")


class ExchangeError(ApplicationError):
    """The exchange refused or failed; the message is safe to show."""


class KeyRejected(ExchangeError):
    """The exchange does not accept this key (wrong key or secret, revoked, IP not allowed)."""


class PermissionRefused(ExchangeError):
    """The key is valid but lacks a permission for this call."""


class OrderRejected(ExchangeError):
    """The exchange refused an order (funds, limits, duplicate client order id...)."""


class OrderNotFound(ExchangeError):
    pass


class ExchangeUnavailable(ExchangeError):
    """Network trouble, maintenance or rate limiting that outlasted our retries."""


def supported_exchanges() -> list[str]:
    return [SANDBOX, *ccxt.exchanges]


def _ccxt_id(exchange_id: str) -> str:
    if exchange_id == SANDBOX:
        return "binance"
    if exchange_id not in ccxt.exchanges:
        raise ExchangeError(f"Unknown exchange {exchange_id!r}.")
    return exchange_id


def required_credentials(exchange_id: str) -> list[str]:
    """The credential fields an exchange needs (apiKey and secret, sometimes password or uid)."""
    cls = getattr(ccxt, _ccxt_id(exchange_id))
    needed: dict[str, bool] = cls().requiredCredentials
    order = ["apiKey", "secret", "password", "uid"]
    return [name for name in order if needed.get(name)] + sorted(
        name for name, on in needed.items() if on and name not in order
    )


def build_client(*, exchange_id: str, credentials: dict[str, str], flavor: str = "sync") -> Any:
    """A ccxt client for the exchange: flavor "sync" (ccxt), "async" (async_support) or "pro" (websockets)."""
    module = {"sync": ccxt, "async": ccxt.async_support, "pro": ccxt.pro}[flavor]
    cls = getattr(module, _ccxt_id(exchange_id))
    client = cls({**credentials, "enableRateLimit": True, "timeout": settings.EXCHANGE_TIMEOUT_MS})
    if exchange_id == SANDBOX:
        if not settings.SANDBOX_URL:
            raise ExchangeUnavailable("The sandbox exchange is not running (SANDBOX_URL is not set).")
        from apps.sandbox.ccxt_config import point_at_sandbox

        point_at_sandbox(client, settings.SANDBOX_URL)
    return client


_URL = re.compile(r"https?://\S+|wss?://\S+")


def safe_reason(exc: BaseException) -> str:
    """The exchange's reason from a ccxt error, without URLs (they carry signed query strings)."""
    text = _URL.sub("[url]", str(exc))
    # ccxt prefixes its messages with the exchange id and often appends the JSON body.
    match = re.search(r'"msg"\s*:\s*"([^"]+)"', text)
    reason = match.group(1) if match else text
    return reason.strip()[:300] or type(exc).__name__


def translate(exc: Exception) -> ExchangeError:
    reason = safe_reason(exc)
    if isinstance(exc, ccxt.AuthenticationError | ccxt.AccountSuspended):
        return KeyRejected(f"The exchange rejected the key: {reason}")
    if isinstance(exc, ccxt.PermissionDenied):
        return PermissionRefused(f"The key lacks a permission: {reason}")
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFound(f"Order not found: {reason}")
    if isinstance(exc, ccxt.InvalidOrder | ccxt.InsufficientFunds):
        return OrderRejected(f"The exchange refused the order: {reason}")
    if isinstance(exc, ccxt.InvalidNonce):
        return ExchangeError(f"The exchange says our clock is off: {reason}")
    if isinstance(exc, ccxt.NetworkError):  # includes RateLimitExceeded / DDoSProtection (429/418)
        return ExchangeUnavailable(f"The exchange is unavailable: {reason}")
    return ExchangeError(f"The exchange refused: {reason}")


def _retryable(exc: Exception) -> bool:
    # InvalidNonce is a NetworkError in ccxt's tree, but retrying with the same clock won't help.
    return isinstance(exc, ccxt.NetworkError) and not isinstance(exc, ccxt.InvalidNonce)


def call(fn: Callable[..., T], *args: Any, retries: int | None = None, **kwargs: Any) -> T:
    """Call a ccxt method with retries (network errors, 429/418) and domain errors on failure.

    Only idempotent calls may be retried blindly; order placement must carry a client order id
    so a retry cannot double it.
    """
    attempts = 1 + (settings.EXCHANGE_RETRIES if retries is None else retries)
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except ccxt.BaseError as exc:
            if attempt < attempts and _retryable(exc):
                delay = min(0.25 * 2 ** (attempt - 1), 4.0)
                logger.info(
                    "exchange call %s failed (%s); retry %d in %.2f s",
                    getattr(fn, "__name__", fn),
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                time.sleep(delay)
                continue
            raise translate(exc) from None
    raise AssertionError("unreachable")


# -- dead-man's switch ---------------------------------------------------------------------
# A countdown the exchange keeps: unless it is set again before it runs out, the exchange
# cancels the open orders itself. The sandbox offers Binance's `countdownCancelAll` on spot
# (one countdown per symbol; ccxt's binance has no method for it on spot, hence the raw signed
# request); other exchanges through ccxt's `cancel_all_orders_after`, where the class has it.

# Classes whose `cancel_all_orders_after` defaults to derivatives: our bots trade spot.
_DEADMAN_PARAMS: dict[str, dict[str, str]] = {
    "bybit": {"type": "spot"},
    "bybiteu": {"type": "spot"},
    "bybitid": {"type": "spot"},
    "bingx": {"type": "spot"},
}
# Classes whose `cancel_all_orders_after` needs a symbol: one countdown per market.
_DEADMAN_PER_SYMBOL = frozenset({"whitebit"})


def deadman_available(client: Any, *, exchange_id: str) -> bool:
    """Whether the exchange can cancel the account's open orders by itself when a countdown runs out."""
    return exchange_id == SANDBOX or bool(client.has.get("cancelAllOrdersAfter"))


def deadman_arm(
    client: Any, *, exchange_id: str, symbols: list[str], timeout_ms: int, retries: int | None = None
) -> None:
    """Set (or push back) the exchange's countdown: it cancels the open orders in `timeout_ms` unless set again.

    On the sandbox one countdown per symbol; elsewhere the exchange's own scope (most often the
    whole account). Raises ExchangeError, also when the exchange has no such switch. `retries` as
    in `call()`: a caller that sets it again every few seconds may prefer to fail fast.
    """
    if timeout_ms <= 0:
        raise ExchangeError("The dead-man's switch needs a positive timeout; use deadman_disarm to switch it off.")
    _deadman_set(client, exchange_id=exchange_id, symbols=symbols, timeout_ms=timeout_ms, retries=retries)


def deadman_disarm(client: Any, *, exchange_id: str, symbols: list[str]) -> None:
    """Switch the countdown off, so that the exchange leaves the open orders alone."""
    _deadman_set(client, exchange_id=exchange_id, symbols=symbols, timeout_ms=0, retries=None)


def _deadman_set(client: Any, *, exchange_id: str, symbols: list[str], timeout_ms: int, retries: int | None) -> None:
    if not deadman_available(client, exchange_id=exchange_id):
        raise ExchangeError(f"{exchange_id} offers no dead-man's switch (cancelAllOrdersAfter).")
    if exchange_id == SANDBOX:
        if client.markets is None:
            call(client.load_markets)
        for symbol in symbols:
            try:
                market_id = client.market_id(symbol)
            except ccxt.BaseError as exc:
                raise translate(exc) from None
            params = {"symbol": market_id, "countdownTime": int(timeout_ms)}
            call(client.request, "countdownCancelAll", ["private"], "POST", params, retries=retries)
        return
    extra = _DEADMAN_PARAMS.get(exchange_id, {})
    if exchange_id in _DEADMAN_PER_SYMBOL:
        for symbol in symbols:
            call(client.cancel_all_orders_after, int(timeout_ms), {**extra, "symbol": symbol}, retries=retries)
        return
    call(client.cancel_all_orders_after, int(timeout_ms), dict(extra), retries=retries)
