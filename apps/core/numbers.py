"""Decimal helpers shared by every layer: writing a number plainly, putting it on an exchange's step."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal


def plain(number: Decimal | int) -> str:
    """A number as people write it: 40000 (not 4E+4 or 40000.000), 0.001 (not 1E-3)."""
    if isinstance(number, int):
        return str(number)
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def on_step(value: Decimal, step: Decimal | None, rounding: str = ROUND_HALF_UP) -> Decimal:
    """`value` on a multiple of `step` (a price tick, an amount step), rounded as `rounding` says."""
    if step is None or not step.is_finite() or step <= 0:
        return value
    return (value / step).to_integral_value(rounding=rounding) * step
