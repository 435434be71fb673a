"""Health checks of the backing services, for /healthz.

Each check answers "ok" or a short, fixed word for what is wrong: never a version, path,
host name, or exception text that could carry a secret.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection

from apps.vault import client as vault

logger = logging.getLogger(__name__)
TIMEOUT_S = 2.0


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _broker() -> str:
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=TIMEOUT_S) as conn:
        conn.connect()
        return "ok" if conn.connected else "unreachable"


def _channel_layer() -> str:
    from channels.layers import get_channel_layer

    async def round_trip() -> str:
        layer = get_channel_layer()
        if layer is None:
            return "not configured"
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "health.ping"})
        message = await asyncio.wait_for(layer.receive(channel), TIMEOUT_S)
        return "ok" if message.get("type") == "health.ping" else "no echo"

    return async_to_sync(round_trip)()


def _vault() -> str:
    state = vault.health(settings.VAULT_ADDR)
    return "ok" if state in ("active", "standby") else state


CHECKS: dict[str, Callable[[], str]] = {
    "database": _database,
    "broker": _broker,
    "channel_layer": _channel_layer,
    "vault": _vault,
}


def health_check() -> dict[str, str]:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception:
            logger.warning("health check %s failed", name, exc_info=True)
            results[name] = "unreachable"
    return results
