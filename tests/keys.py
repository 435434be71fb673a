"""Keys on the sandbox exchange for tests."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ccxt
import pytest

from apps.exchanges import port
from apps.sandbox.ccxt_config import point_at_sandbox


@dataclass
class Key:
    api_key: str
    secret: str

    def form(self, **extra: str) -> dict[str, str]:
        return {"apiKey": self.api_key, "secret": self.secret, **extra}

    def raw_ccxt(self, sandbox_url: str) -> Any:
        """A plain ccxt client with this key, as someone outside botconsole would use it (not the port)."""
        client = ccxt.binance({**self.form(), "enableRateLimit": False})
        point_at_sandbox(client, sandbox_url)
        return client

    def exchange(self) -> port.Exchange:
        """The key through the exchange port, as a bot worker holds it (SANDBOX_URL set: the sandbox_url fixture)."""
        return port.Exchange(exchange_id="sandbox", credentials=self.form())


@pytest.fixture
def sandbox_url(settings: Any, sandbox: Any) -> str:
    """Point the code under test at the session's sandbox exchange."""
    settings.SANDBOX_URL = sandbox.url
    return str(sandbox.url)


@pytest.fixture
def new_key(sandbox: Any, sandbox_url: str) -> Callable[..., Key]:
    """A fresh key on the sandbox; the secret carries a canary prefix so leaks are easy to find."""

    def make(*, can_trade: bool = True, can_withdraw: bool = False, ip_restrict: bool = False) -> Key:
        # Binance-shaped: 64 letters and digits each.
        key = Key(api_key=secrets.token_hex(32), secret="CANARY" + secrets.token_hex(29))
        sandbox.admin.create_key(
            api_key=key.api_key,
            secret=key.secret,
            can_trade=can_trade,
            can_withdraw=can_withdraw,
            ip_restrict=ip_restrict,
        )
        return key

    return make
