"""Publishing live events: a row in the caller's transaction, a tiny notification after commit.

The notification carries only the sequence number. Each socket then loads the row and checks its
own user's permissions, so nothing in Redis is more than "event 123 exists", and a rolled-back
transaction never announces anything.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from apps.core.exceptions import ApplicationError
from apps.core.logging import redact
from apps.events.models import Event

logger = logging.getLogger(__name__)

FLEET_GROUP = "fleet"
KINDS = frozenset(Event.Kind.values)


def bot_group(bot_id: int) -> str:
    return f"bot-{bot_id}"


def event_json(event: Event) -> dict[str, Any]:
    """What a client receives, over the websocket and from the catch-up endpoint alike."""
    at = event.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return {"seq": event.seq, "kind": event.kind, "bot": event.bot_id or None, "at": at, "data": event.payload}


def publish(*, kind: str, data: dict[str, Any], bot_id: int | None = None) -> Event:
    """Store a live event in the caller's transaction; notify sockets once it commits.

    Never put a secret in `data`: it is masked here as a last line of defence (the same rules as
    the log filter), but it would still be a bug.
    """
    if kind not in KINDS:
        raise ApplicationError(f"Unknown live event kind {kind!r}; choose one of {', '.join(sorted(KINDS))}.")
    # Round-trip through JSON now so the returned row holds what readers will get (Decimal -> str)
    # and an unserialisable value fails here, in the caller, not later in a socket.
    payload = json.loads(json.dumps(redact(data), cls=DjangoJSONEncoder))
    event = Event.objects.create(kind=kind, bot_id=bot_id, payload=payload)
    transaction.on_commit(lambda: _notify(event.seq, bot_id))
    return event


def _notify(seq: int, bot_id: int | None) -> None:
    groups = [FLEET_GROUP] if bot_id is None else [FLEET_GROUP, bot_group(bot_id)]
    try:
        async_to_sync(_group_send)(groups, {"type": "live.event", "seq": seq})
    except Exception:
        # The trade, fill or alert already committed; failing it now would be worse than a late
        # dashboard. The row stays and clients pick it up through the catch-up endpoint.
        # No traceback: with Redis down every event would print one; the row is there for catch-up.
        logger.warning("live event %s stored but not announced: channel layer unavailable", seq)


async def _group_send(groups: list[str], message: dict[str, Any]) -> None:
    # One event loop (hence one Redis connection) for both groups: sync callers get a fresh loop
    # per async_to_sync call.
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    for group in groups:
        await layer.group_send(group, message)
