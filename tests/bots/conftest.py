"""Fixtures shared by the tests of bot workers: a fleet supervisor in the test process and sandbox accounts.

The supervisor runs in the test process (`Fleet.sync_once()`), holding only the fleet token; the
workers it starts are real `celery worker -Q bot.<id>` processes on the test database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apps.bots.fleet import Fleet
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.vault import client as vault
from tests.harness import Harness
from tests.keys import Key
from tests.processes import process_env


@pytest.fixture
def worker_env(services: Harness, sandbox_url: str, tmp_path: Path) -> dict[str, str]:
    """What a supervisor started by `make run` would pass on, pointed at the test database."""
    # The supervisor's own token: it must not reach the workers.
    return process_env(services, token=services.tokens["fleet"].token, var_dir=tmp_path, sandbox_url=sandbox_url)


@pytest.fixture
def fleet_vault(services: Harness) -> vault.ProcessVault:
    return vault.ProcessVault(services.vault_addr, services.tokens["fleet"].token)


@pytest.fixture
def fleet(fleet_vault: vault.ProcessVault, worker_env: dict[str, str], tmp_path: Path) -> Iterator[Fleet]:
    supervisor = Fleet(process_vault=fleet_vault, env=worker_env, grace_s=10, log_dir=tmp_path / "logs")
    try:
        yield supervisor
    finally:
        supervisor.shutdown()
        for log in sorted((tmp_path / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def account(new_key: Callable[..., Key]) -> Callable[[str], tuple[ExchangeAccount, Key]]:
    def make(label: str) -> tuple[ExchangeAccount, Key]:
        key = new_key()
        acct, _ = exchange_account_create(
            label=label, exchange_id="sandbox", credentials=key.form(), attested_no_withdrawals=False,
            actor="system:test",
        )  # fmt: skip
        return acct, key

    return make
