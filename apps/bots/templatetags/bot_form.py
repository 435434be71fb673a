from __future__ import annotations

from decimal import Decimal

from django import template

from apps.core.numbers import plain

register = template.Library()


@register.filter(name="plain")
def plain_filter(value: object) -> str:
    """A Decimal or int written plainly (54450, 0.001), as it can be typed back into a field."""
    if isinstance(value, Decimal | int) and not isinstance(value, bool):
        return plain(value)
    return "" if value is None else str(value)
