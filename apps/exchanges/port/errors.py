"""The port's errors: ccxt's exceptions translated into the project's, and the retries of what is safe to repeat."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import ccxt
from django.conf import settings

from apps.core.exceptions import ApplicationError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ExchangeError(ApplicationError):
    """The exchange refused or failed; the message is safe to show."""


class KeyRejected(ExchangeError):
    """The exchange does not accept this key (wrong key or secret, revoked, IP not allowed)."""


class PermissionRefused(ExchangeError):
    """The key is valid but lacks a permission for this call."""


class OrderRejected(ExchangeError):
    """The exchange refused an order (funds, limits...)."""


class OrderNotFound(ExchangeError):
    pass


class ExchangeUnavailable(ExchangeError):
    """Network trouble, maintenance or rate limiting that outlasted our retries: the outcome is unknown."""


class ClockSkew(ExchangeError):
    """The exchange refused the request's timestamp (our clock and its clock disagree)."""


_URL = re.compile(r"https?://\S+|wss?://\S+")


def safe_reason(exc: BaseException) -> str:
    """The exchange's reason from a ccxt error, without URLs (they carry signed query strings)."""
    text = _URL.sub("[url]", str(exc))
    # ccxt prefixes its messages with the exchange id and often appends the JSON body.
    match = re.search(r'"msg"\s*:\s*"([^"]+)"', text)
    reason = match.group(1) if match else text
    return reason.strip()[:300] or type(exc).__name__


def translate(exc: BaseException) -> ExchangeError:
    """ccxt's exception as one of ours (anything else as a plain ExchangeError naming its type only)."""
    if not isinstance(exc, ccxt.BaseError):
        return ExchangeUnavailable(f"The exchange call failed: {type(exc).__name__}")
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
        return ClockSkew(f"The exchange says our clock is off: {reason}")
    if isinstance(exc, ccxt.NetworkError):  # includes RateLimitExceeded / DDoSProtection (429/418), 5xx
        return ExchangeUnavailable(f"The exchange is unavailable: {reason}")
    return ExchangeError(f"The exchange refused: {reason}")


def _retryable(exc: BaseException) -> bool:
    # InvalidNonce is a NetworkError in ccxt's tree, but retrying with the same clock won't help.
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ClientError):
        return True
    return isinstance(exc, ccxt.NetworkError) and not isinstance(exc, ccxt.InvalidNonce)


def _delay(attempt: int, exc: BaseException) -> float:
    """Backoff before retry `attempt` (1, 2, ...): doubling from 0.25 s, longer after a rate limit."""
    base = 1.0 if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection) else 0.25
    return float(min(base * 2 ** (attempt - 1), 4.0))


def _attempts(retries: int | None) -> int:
    return 1 + (int(settings.EXCHANGE_RETRIES) if retries is None else retries)


def call(fn: Callable[..., T], *args: Any, retries: int | None = None, **kwargs: Any) -> T:
    attempts = _attempts(retries)
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, ccxt.BaseError):
                raise
            if attempt < attempts and _retryable(exc):
                delay = _delay(attempt, exc)
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


async def acall(fn: Callable[..., Awaitable[T]], *args: Any, retries: int | None = None, **kwargs: Any) -> T:
    attempts = _attempts(retries)
    for attempt in range(1, attempts + 1):
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, ccxt.BaseError | asyncio.TimeoutError | aiohttp.ClientError):
                raise
            if attempt < attempts and _retryable(exc):
                await asyncio.sleep(_delay(attempt, exc))
                continue
            raise translate(exc) from None
    raise AssertionError("unreachable")
