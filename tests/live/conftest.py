"""Live feed tests: the real ASGI application, real sessions, the real Redis channel layer."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from apps.bots.models import Bot
from apps.events.hub import hub_stop
from apps.exchanges.models import ExchangeAccount
from botconsole.asgi import application

ORIGIN = "http://localhost"


@pytest.fixture(autouse=True)
def own_notify_channel(settings: Any) -> str:
    """An announcement channel of this test's own, so counting its subscribers counts ours only.
    (A stray announcement would only wake a hub: what it sends comes from our database.)"""
    settings.LIVE_NOTIFY_CHANNEL = f"test-live-{secrets.token_hex(4)}"
    return str(settings.LIVE_NOTIFY_CHANNEL)


def run(scenario: Callable[[], Any]) -> None:
    """Run an async test scenario in its own event loop; the loop's live hub is stopped before the loop closes, so
    its tasks end by themselves (nothing left to cancel)."""

    async def then_stop() -> None:
        try:
            await scenario()
        finally:
            await hub_stop()

    async_to_sync(then_stop)()


async def frame(ws: WebsocketCommunicator, timeout: float = 3) -> list[dict[str, Any]]:
    """The events of the next frame a socket receives ({"events": [...]}, oldest first)."""
    body = await ws.receive_json_from(timeout=timeout)
    assert set(body) == {"events"} and body["events"], body
    events: list[dict[str, Any]] = body["events"]
    return events


async def one_event(ws: WebsocketCommunicator, timeout: float = 3) -> dict[str, Any]:
    """The next frame, which must hold exactly one event."""
    events = await frame(ws, timeout)
    assert len(events) == 1, events
    return events[0]


def socket(client: Client | None, path: str = "/ws/live/", origin: str = ORIGIN) -> WebsocketCommunicator:
    """A websocket as a browser tab of `client` would open it (its session cookie, our Origin)."""
    headers = [(b"host", b"localhost"), (b"origin", origin.encode())]
    if client is not None and settings.SESSION_COOKIE_NAME in client.cookies:
        cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        headers.append((b"cookie", cookie.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.fixture
def make_bot(db: None) -> Callable[[str], Bot]:
    def make(name: str) -> Bot:
        # Metadata only: the live feed never touches the key, so no Vault secret is needed.
        account = ExchangeAccount.objects.create(
            label=f"live-{name}",
            exchange_id="sandbox",
            key_fingerprint="abcd",
            key_digest="0" * 64,
            withdrawals=ExchangeAccount.Withdrawals.DISABLED,
        )
        fields: dict[str, Any] = {
            "name": name,
            "account": account,
            "strategy": "grid",
            "symbols": ["BTC/USDT"],
            "params": {"lower": "55000", "upper": "65000", "levels": 5, "order_amount": "0.001"},
            "max_order_notional": Decimal("1000"),
            "max_position_notional": Decimal("5000"),
            "daily_loss_limit": Decimal("1000"),
            "max_drawdown_pct": Decimal("50"),
        }
        return Bot.objects.create(**fields)

    return make
