"""Fixtures shared by the tests of bot workers: a fleet supervisor in the test process and sandbox accounts.

The supervisor runs in the test process (`Fleet.sync_once()`), holding only the fleet token; the
workers it starts are real `celery worker -Q bot.<id>` processes on the test database.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from tests.fleet_support import fleet, fleet_vault, spawn_fleet, worker_env  # noqa: F401 - fixtures
from tests.keys import Key


@pytest.fixture
def account(new_key: Callable[..., Key]) -> Callable[[str], tuple[ExchangeAccount, Key]]:
    def make(label: str) -> tuple[ExchangeAccount, Key]:
        key = new_key()
        acct, _ = exchange_account_create(
            label=label,
            exchange_id="sandbox",
            credentials=key.form(),
            attested_no_withdrawals=False,
            actor="system:test",
        )
        return acct, key

    return make
