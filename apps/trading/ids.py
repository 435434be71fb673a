"""Deterministic client order ids: a retried placement re-sends the same id, so the exchange refuses a double."""

from __future__ import annotations

import hashlib
import re

# Binance's rule for newClientOrderId; the strictest of the exchanges we target.
CLIENT_ORDER_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
MAX_LEN = 36
MIN_HASH = 12  # hex characters of the hash kept when the tag is appended (48 bits)
_TAG_RE = re.compile(r"^[.A-Za-z0-9_-]+$")


def client_order_id(bot_id: int, intent_tag: str, generation: int) -> str:
    """A short id derived from (bot, intent tag, tick generation): the same inputs always give the same id.

    When the tag fits it is kept as a readable suffix ("<hash>-grid-3-buy"): strategies recognise
    their resting orders by it, and people reading the exchange's order list can too. Otherwise
    the id is the hash alone.
    """
    digest = hashlib.sha256(f"botconsole:{bot_id}:{intent_tag}:{generation}".encode()).hexdigest()
    room = MAX_LEN - 1 - len(intent_tag)
    readable = _TAG_RE.match(intent_tag) is not None and room >= MIN_HASH
    cid = f"{digest[: min(room, 20)]}-{intent_tag}" if readable else digest[:32]
    assert CLIENT_ORDER_ID_RE.match(cid)
    return cid
