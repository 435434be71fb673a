"""Per-key request rate, counted over a sliding minute like Binance's REQUEST_WEIGHT (weight 1 each)."""

from __future__ import annotations

import math
from collections import deque

from apps.sandbox import errors
from apps.sandbox.state import ExchangeState

WINDOW_MS = 60_000


def admit(state: ExchangeState, bucket: str, limit: int, now_ms: int) -> int:
    """Count one request for `bucket` (an API key, or "ip:<peer>" without one); 429 past `limit`.

    Returns the requests used in the current window, for the X-MBX-USED-WEIGHT-1M header.
    Refused requests are not counted, so a client that honours Retry-After gets back in.
    """
    log = state.request_log.setdefault(bucket, deque())
    while log and log[0] <= now_ms - WINDOW_MS:
        log.popleft()
    if len(log) >= limit:
        retry_after_s = max(1, math.ceil((log[0] + WINDOW_MS - now_ms) / 1000))
        raise errors.too_many_requests(limit, retry_after_s)
    log.append(now_ms)
    return len(log)
