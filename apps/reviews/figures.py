"""How a review writes its figures: decimals as plain strings at the stored precision, times canonical.

Every section of a review (and the snapshots that feed it) formats through these two, so the same
amount or moment always reads the same and the review's digest does not depend on who formatted it.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal

from apps.audit.chain import canonical_time

STORED = Decimal("1e-12")  # the trading tables' precision (numeric(28, 12))


def num(value: Decimal) -> str:
    """A decimal as a plain string at the stored precision: "0.001", "10", never "1E+1" or "-0"."""
    rounded = value.quantize(STORED, rounding=ROUND_HALF_UP)
    return "0" if rounded == 0 else format(rounded.normalize(), "f")


def when(value: dt.datetime | None) -> str | None:
    return canonical_time(value) if value is not None else None
