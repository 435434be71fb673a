"""Reconciliation against the sandbox: foreign orders are flagged, stale order states are corrected."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.core import mail

from apps.alerts.models import Alert
from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.trading.models import Order
from apps.trading.reconcile import reconcile
from apps.trading.tick import tick_run
from tests.trading.conftest import Live

pytestmark = pytest.mark.django_db


def test_it_flags_an_order_placed_on_the_account_outside_botconsole(
    live: Live, make_bot: Callable[..., Bot], person: Callable[..., object]
) -> None:
    person("admin-on-call", "admin")  # someone to mail the alert to
    bot = make_bot()
    tick_run(bot=bot, exchange=live.exchange)  # our own two grid orders: not foreign
    # Someone with a copy of the key trades another market directly.
    stolen = live.ccxt.create_order("ETH/USDT", "limit", "buy", 0.01, 2000)

    report = reconcile(bot=bot, exchange=live.exchange)
    assert report.foreign == [stolen["id"]] and report.checked_open == 3
    alert = Alert.objects.get(kind="foreign_order")
    assert alert.severity == Alert.Severity.CRITICAL and "stolen API key" in alert.message
    assert alert.data["exchange_order_id"] == stolen["id"]
    assert AuditEntry.objects.filter(action="reconcile.foreign_order", data__exchange_order_id=stolen["id"]).exists()
    assert any("stolen" in m.body for m in mail.outbox)

    # Seen again: reported, not alerted twice.
    assert reconcile(bot=bot, exchange=live.exchange).foreign == [stolen["id"]]
    assert Alert.objects.filter(kind="foreign_order").count() == 1


def test_it_updates_an_order_we_think_open_but_the_exchange_closed(live: Live, make_bot: Callable[..., Bot]) -> None:
    bot = make_bot()
    tick_run(bot=bot, exchange=live.exchange)
    order = Order.objects.filter(bot=bot).first()
    assert order is not None and order.is_open
    live.ccxt.cancel_order(order.exchange_order_id, order.symbol)  # behind botconsole's back

    report = reconcile(bot=bot, exchange=live.exchange)
    assert report.updated == [order.client_order_id] and report.foreign == []
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELED
