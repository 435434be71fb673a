from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges import port
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from tests.keys import Key

SYMBOL = "BTC/USDT"
PRICE = Decimal("60000")
_names = itertools.count(1)


@dataclass
class Live:
    """A sandbox key, its exchange account (secret in Vault), the key through the exchange port (as a bot's
    worker holds it) and as a plain ccxt client (someone else using the key, behind botconsole's back)."""

    key: Key
    account: ExchangeAccount
    exchange: port.Exchange
    ccxt: Any
    sandbox: Any

    def exchange_orders(self, *, open_only: bool = False) -> list[dict[str, Any]]:
        return list(self.sandbox.admin.orders(self.key.api_key, open_only=open_only))

    def requests(self) -> int:
        """Order requests the exchange received from this key (refused ones included)."""
        return int(self.sandbox.admin.order_count().for_key(self.key.api_key))


@pytest.fixture
def price(sandbox: Any) -> Iterator[Decimal]:
    # The session's sandbox is shared: pin BTC where each test expects it (hold stops the random
    # walk), and let it walk again afterwards for the tests that watch the live feed.
    sandbox.admin.set_price(SYMBOL, str(PRICE), hold=True)
    yield PRICE
    sandbox.admin.release_price(SYMBOL)


@pytest.fixture
def live(db: None, sandbox: Any, new_key: Callable[..., Key], price: Decimal) -> Live:
    key = new_key()
    account, _ = exchange_account_create(
        label=f"trading-{key.api_key[-8:]}",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return Live(key, account, key.exchange(), key.raw_ccxt(sandbox.url), sandbox)


@pytest.fixture
def make_bot(live: Live) -> Callable[..., Bot]:
    def make(**overrides: Any) -> Bot:
        fields: dict[str, Any] = {
            "name": f"bot-{next(_names)}-{live.key.api_key[-6:]}",
            "account": live.account,
            "strategy": "grid",
            "params": {"lower": "55000", "upper": "65000", "levels": 5, "order_amount": "0.001"},
            "symbols": [SYMBOL],
            "mode": Bot.Mode.LIVE,
            "max_order_notional": Decimal("1000"),
            "max_position_notional": Decimal("5000"),
            "max_open_orders": 20,
            "max_orders_per_minute": 30,
            "daily_loss_limit": Decimal("100000"),
            "max_drawdown_pct": Decimal("90"),
            # Started, as a bot whose worker places orders is: the gate refuses a bot told to stop.
            "desired_state": Bot.Desired.RUNNING,
            **overrides,
        }
        return Bot.objects.create(**fields)

    return make


def audit_actions(bot: Bot, action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(actor=f"system:bot-{bot.pk}", action=action))
