"""Live feed tests: the real ASGI application, real sessions, the real Redis channel layer."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from botconsole.asgi import application

ORIGIN = "http://localhost"


@pytest.fixture(autouse=True)
def own_channel_layer(settings: Any) -> None:
    """A channel-layer prefix of this test's own: other test runs share the Valkey, and a stray
    "fleet" notification from them would land in our sockets."""
    layer = dict(settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"] = {**layer["CONFIG"], "prefix": f"test-live-{secrets.token_hex(4)}"}
    settings.CHANNEL_LAYERS = {"default": layer}  # channels drops its cached layer on this change


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
