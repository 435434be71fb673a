"""Helpers for the sandbox tests: real ccxt clients pointed at the sandbox subprocess."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import ccxt
import pytest

from apps.sandbox.ccxt_config import point_at_sandbox
from tests.fixtures.sandbox import SandboxProcess

T = TypeVar("T")


def make_binance(sandbox: SandboxProcess, api_key: str | None = None, secret: str | None = None) -> ccxt.binance:
    config: dict[str, Any] = {}
    if api_key is not None:
        config = {"apiKey": api_key, "secret": secret}
    exchange = ccxt.binance(config)
    point_at_sandbox(exchange, sandbox.url)
    return exchange


def wait_for(probe: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll until `probe` returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def exchange(sandbox: SandboxProcess, sandbox_key: tuple[str, str]) -> ccxt.binance:
    """A sync ccxt.binance with this test's fresh key, markets loaded."""
    client = make_binance(sandbox, *sandbox_key)
    client.load_markets()
    return client
