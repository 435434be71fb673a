"""Reading the live event store."""

from __future__ import annotations

from django.db.models import Max

from apps.events.models import Event


def event_cursor() -> int:
    """The newest live event's sequence number: the page's starting cursor for live updates."""
    return int(Event.objects.aggregate(last=Max("seq"))["last"] or 0)
