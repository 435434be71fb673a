"""The port's errors: ccxt's exceptions translated into the project's, and the retries of what is safe to repeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
import weakref
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


# Binance's codes for a failure on its side, whose request may or may not have been carried out: -1000 unknown
# error, -1001 internal error, -1006 unexpected answer, -1007 timeout, -1008 overloaded. ccxt maps the first
# three to OperationFailed, -1007 to RequestTimeout and -1008 to a plain ExchangeError.
_BINANCE_SERVER_CODES = frozenset({"-1000", "-1001", "-1006", "-1007", "-1008"})
_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')


def server_trouble(exc: BaseException) -> bool:
    """Whether the exchange failed on its side or was not reached: network errors, timeouts, 429, 5xx answers
    (a gateway's page or the exchange's own "internal error"). Temporary, so worth retrying; and for a request
    that changes something (placing an order) the outcome is UNKNOWN: it must be looked up, not assumed."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ClientError):
        return True
    if isinstance(exc, ccxt.InvalidNonce):  # a NetworkError in ccxt's tree, but a refusal of our clock
        return False
    if isinstance(exc, ccxt.OperationFailed):  # NetworkError (429, gateway 5xx, timeouts) and Binance's -1000/-1001
        return True
    if isinstance(exc, ccxt.ExchangeError) and str(exc).startswith("binance"):
        code = _CODE.search(str(exc))
        return code is not None and code.group(1) in _BINANCE_SERVER_CODES
    return False


def rate_limited(exc: BaseException) -> bool:
    """A 429/418: the exchange refused the request without handling it."""
    return isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection)


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
    if server_trouble(exc):
        return ExchangeUnavailable(f"The exchange is unavailable: {reason}")
    return ExchangeError(f"The exchange refused: {reason}")


def _backoff(attempt: int, exc: BaseException) -> float:
    """Backoff before retry `attempt` (1, 2, ...): doubling from 0.25 s, from 1 s after a rate limit."""
    base = 1.0 if rate_limited(exc) else 0.25
    return float(min(base * 2 ** (attempt - 1), 4.0))


def _attempts(retries: int | None) -> int:
    return 1 + (int(settings.EXCHANGE_RETRIES) if retries is None else retries)


def _retry_after_s(client: Any) -> float | None:
    headers = getattr(client, "last_response_headers", None) or {}
    try:
        value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
        return None if value is None else max(0.0, float(value))
    except (TypeError, ValueError, AttributeError):
        return None


# When each ccxt client may call its exchange again (time.monotonic()), after a 429: every call on that client
# waits, not only the one refused (a rate limit is the key's, or the address's, not the call's).
_quiet: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_quiet_lock = threading.Lock()


def _quiet_left(client: Any) -> float:
    if client is None:
        return 0.0
    with _quiet_lock:
        until = _quiet.get(client, 0.0)
    return max(0.0, until - time.monotonic())


def _quiet_for(client: Any, seconds: float) -> None:
    if client is None or seconds <= 0:
        return
    with contextlib.suppress(TypeError), _quiet_lock:
        _quiet[client] = max(_quiet.get(client, 0.0), time.monotonic() + seconds)


RESYNC, RETRY, GIVE_UP = "resync", "retry", "give up"


class _Retrying:
    """One call's way through failures, the same on the sync and async paths.

    Retried (up to `retries`, EXCHANGE_RETRIES by default): what `server_trouble` says is temporary, after a
    backoff, or after the exchange's Retry-After when it gave one (429; at most EXCHANGE_RETRY_AFTER_MAX_S),
    which then holds for every call on the same client. -1021 (our clock against the exchange's): once, after
    syncing the client's time difference from the exchange's clock, so that no request goes out twice with a
    stale timestamp. `on_trouble` hears of every temporary failure (the kill's report counts them).
    """

    def __init__(self, fn: Callable[..., Any], retries: int | None, on_trouble: Callable[[], None] | None) -> None:
        self.name = getattr(fn, "__name__", str(fn))
        self.client: Any = getattr(fn, "__self__", None)
        self.left = _attempts(retries)
        self.failures = 0
        self.resynced = False
        self.on_trouble = on_trouble

    def before(self) -> float:
        """Seconds to wait before the next request: what is left of a rate limit's wait on this client."""
        return _quiet_left(self.client)

    def after(self, exc: BaseException) -> tuple[str, float]:
        """What to do after `exc`: resync the clock, retry after some seconds, or give up (raise)."""
        self.left -= 1
        if isinstance(exc, ccxt.InvalidNonce):
            can_resync = not self.resynced and callable(getattr(self.client, "load_time_difference", None))
            self.resynced = True
            return (RESYNC, 0.0) if can_resync else (GIVE_UP, 0.0)
        if not server_trouble(exc):
            return GIVE_UP, 0.0
        self.failures += 1
        if self.on_trouble is not None:
            self.on_trouble()
        delay = _backoff(self.failures, exc)
        if rate_limited(exc):
            # The exchange's Retry-After, up to EXCHANGE_RETRY_AFTER_MAX_S: a call (a kill's cancel above all)
            # never sleeps for minutes; asked again after that, the exchange says again how long.
            retry_after = min(_retry_after_s(self.client) or 0.0, float(settings.EXCHANGE_RETRY_AFTER_MAX_S))
            delay = max(delay, retry_after)
            _quiet_for(self.client, delay)
        if self.left <= 0:
            return GIVE_UP, 0.0
        logger.info("exchange call %s failed (%s); retry in %.2f s", self.name, type(exc).__name__, delay)
        if rate_limited(exc) and self.client is not None:
            return RETRY, 0.0  # `before` waits: the quiet time holds for every call on the client
        return RETRY, delay

    def resync_failed(self, exc: BaseException) -> None:
        logger.warning("exchange call %s: the clock could not be synced (%s)", self.name, type(exc).__name__)


def call(
    fn: Callable[..., T],
    *args: Any,
    retries: int | None = None,
    resolve: Callable[[], T | None] | None = None,
    on_trouble: Callable[[], None] | None = None,
    **kwargs: Any,
) -> T:
    """`fn(*args, **kwargs)` (a method of a ccxt client) with the retries of `_Retrying`; ccxt errors translated.

    `resolve` is for a call that must not be repeated blindly (placing an order): after a failure whose
    outcome is unknown (not a 429, which refuses unhandled), it is asked before each retry whether the
    earlier attempt got through; what it returns (not None) is the call's result.
    """
    retrying = _Retrying(fn, retries, on_trouble)
    while True:
        time.sleep(retrying.before())
        try:
            return fn(*args, **kwargs)
        except ccxt.BaseError as exc:
            failure: ccxt.BaseError = exc
        step, delay = retrying.after(failure)
        if step == GIVE_UP:
            raise translate(failure) from None
        if step == RESYNC:
            try:
                retrying.client.load_time_difference()
            except ccxt.BaseError as exc:
                retrying.resync_failed(exc)
                raise translate(failure) from None
            continue
        time.sleep(delay)
        if resolve is not None and not rate_limited(failure):
            found = resolve()
            if found is not None:
                return found


async def acall(
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    retries: int | None = None,
    resolve: Callable[[], Awaitable[T | None]] | None = None,
    on_trouble: Callable[[], None] | None = None,
    **kwargs: Any,
) -> T:
    """`call` for a coroutine method of an async ccxt client (asyncio timeouts and aiohttp errors count as network
    errors)."""
    retrying = _Retrying(fn, retries, on_trouble)
    while True:
        await asyncio.sleep(retrying.before())
        try:
            return await fn(*args, **kwargs)
        except (TimeoutError, ccxt.BaseError, aiohttp.ClientError) as exc:
            failure: BaseException = exc
        step, delay = retrying.after(failure)
        if step == GIVE_UP:
            raise translate(failure) from None
        if step == RESYNC:
            try:
                await retrying.client.load_time_difference()
            except ccxt.BaseError as exc:
                retrying.resync_failed(exc)
                raise translate(failure) from None
            continue
        await asyncio.sleep(delay)
        if resolve is not None and not rate_limited(failure):
            found = await resolve()
            if found is not None:
                return found
