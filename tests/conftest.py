from __future__ import annotations

import pytest

from apps.vault import client as vault
from tests.harness import Harness, harness


@pytest.fixture(scope="session")
def services() -> Harness:
    """The real servers of this test session (see tests/harness.py)."""
    return harness


@pytest.fixture
def web_vault(services: Harness) -> vault.ProcessVault:
    return vault.ProcessVault(services.vault_addr, services.tokens["web"].token)


@pytest.fixture
def control_vault(services: Harness) -> vault.ProcessVault:
    return vault.ProcessVault(services.vault_addr, services.tokens["control"].token)
