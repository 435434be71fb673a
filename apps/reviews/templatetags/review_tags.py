from __future__ import annotations

import datetime as dt

from django import template

register = template.Library()


@register.filter
def utc(value: object) -> str:
    """An ISO time from a review ("2026-03-01T12:00:00.123456+00:00") as "2026-03-01 12:00:00"."""
    if not isinstance(value, str) or not value:
        return "" if value is None else str(value)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
