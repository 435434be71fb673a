"""Decimal parsing and formatting the way Binance writes numbers: strings with 8 decimals."""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation

from apps.sandbox import errors

ZERO = Decimal(0)
EIGHT_PLACES = Decimal("0.00000001")
NUMBER = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")


def fmt(value: Decimal) -> str:
    return f"{value.quantize(EIGHT_PLACES):f}"


def parse(param: str, raw: str) -> Decimal:
    """A non-negative decimal parameter, refused with Binance's -1100 when malformed."""
    if not NUMBER.match(raw):
        raise errors.illegal_characters(param, NUMBER.pattern)
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already excludes this
        raise errors.illegal_characters(param, NUMBER.pattern) from exc
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -8:
        raise errors.bad_precision(param)
    return value


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def is_multiple(value: Decimal, step: Decimal) -> bool:
    return value % step == 0


def up8(value: Decimal) -> Decimal:
    """Commission rounding: the exchange never under-charges."""
    return value.quantize(EIGHT_PLACES, rounding=ROUND_UP)
