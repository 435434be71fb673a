from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.vault import client as vault
from tests.harness import Harness, harness
from tests.people import Person, full_login, make_person

pytest_plugins = ["tests.fixtures.sandbox", "tests.keys"]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Where the browser tests' screenshots are (tests/e2e/conftest.py: under the run's own output folder)."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return
    root = Path(factory.getbasetemp())
    # One folder per pytest-xdist process (popen-gw0, ...), or the run's own without xdist.
    for folder in [root / "screens", *sorted(root.glob("popen-gw*/screens"))]:
        if folder.exists():
            terminalreporter.write_line(f"browser screenshots: {folder}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Captured output that holds text UTF-8 cannot carry (a hostile test's lone surrogates) is escaped, so the
    report travels between `make test`'s two processes (pytest-xdist sends it as UTF-8)."""
    report = yield
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    return report


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.fixture(scope="session")
def services() -> Harness:
    """The real servers of this test session (see tests/harness.py)."""
    return harness


@pytest.fixture
def web_vault(services: Harness) -> vault.ProcessVault:
    return vault.ProcessVault(services.vault_addr, services.tokens["web"].token)


@pytest.fixture
def root_vault(services: Harness) -> vault.ProcessVault:
    """Vault as its administrator (the harness's admin token): for checks no process may make."""
    return vault.ProcessVault(services.vault_addr, services.admin_token)


@pytest.fixture
def control_vault(services: Harness) -> vault.ProcessVault:
    return vault.ProcessVault(services.vault_addr, services.tokens["control"].token)


@pytest.fixture
def person(db: None) -> Callable[..., Person]:
    return make_person


@pytest.fixture
def logged_in(db: None) -> Callable[[str], tuple[Client, Person]]:
    """A client logged in (password + TOTP) as a new user of the given role."""

    def make(role: str) -> tuple[Client, Person]:
        who = make_person(f"{role}-user", role)
        client = Client()
        full_login(client, who)
        return client, who

    return make
