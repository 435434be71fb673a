"""What the exchange-fault tests (tests/faults/test_exchange_faults.py) add to the shared scenario (support.py).

- `worker_env` (import it into the test module): the bot workers' environment with a short exchange timeout
  (WORKER_EXCHANGE_TIMEOUT_MS), so an answer the sandbox holds times out in seconds, not in the default ten.
- `exchange_control_worker`: a real control worker (`celery worker -Q control`) for the kill, started at once
  and waited for by the test when it needs it; its circuit breakers are off (they would race the faults).
- `faults_cleared`: every sandbox fault switched off after the test, whatever happened.
- `FaultLog`: the sandbox's record of the answers its faults changed, per key of the scenario's live bots.
- `orders_after` / `new_orders_everywhere`: the live keys' orders the exchange accepted after a moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from apps.trading.models import Order
from tests.faults.support import FaultScenario
from tests.fixtures.sandbox import SandboxProcess
from tests.fleet_support import ControlWorker, wait_until
from tests.harness import Harness

WORKER_EXCHANGE_TIMEOUT_MS = "2000"


@pytest.fixture
def worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "EXCHANGE_TIMEOUT_MS": WORKER_EXCHANGE_TIMEOUT_MS}


@pytest.fixture
def exchange_control_worker(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[ControlWorker]:
    worker = ControlWorker(services, tmp_path / "control", sandbox_url)
    try:
        yield worker
    finally:
        worker.stop()
        print(f"--- control worker\n{worker.log()[-3000:]}")


@pytest.fixture
def faults_cleared(sandbox: SandboxProcess) -> Iterator[None]:
    try:
        yield
    finally:
        sandbox.admin.clear_faults()


@dataclass(frozen=True)
class FaultLog:
    """The sandbox's faulted answers to the given keys (each key is one test's own: the log is the session's)."""

    entries: list[dict[str, Any]]

    @classmethod
    def read(cls, sandbox: SandboxProcess, keys: Iterable[str]) -> FaultLog:
        wanted = set(keys)
        return cls([e for e in sandbox.admin.faults().log if e.get("api_key") in wanted])

    def of(
        self, fault: str, *, key: str | None = None, method: str | None = None, path: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            e
            for e in self.entries
            if e["fault"] == fault
            and (key is None or e["api_key"] == key)
            and (method is None or e["method"] == method)
            and (path is None or e["path"].startswith(path))
        ]

    def count(self, fault: str, **match: str) -> int:
        return len(self.of(fault, **match))

    def per_key(self, fault: str) -> Counter[str]:
        return Counter(e["api_key"] for e in self.of(fault))


def orders_after(scenario: FaultScenario, since_ms: int) -> dict[str, list[dict[str, Any]]]:
    """Each live key's orders that the exchange accepted at or after `since_ms` (its own clock, ms)."""
    found: dict[str, list[dict[str, Any]]] = {key.api_key: [] for _, key in scenario.live}
    for order in scenario.exchange_orders(since_ms=since_ms):
        found[order["apiKey"]].append(order)
    return found


def new_orders_everywhere(scenario: FaultScenario, since_ms: int, what: str, timeout: float = 20.0) -> None:
    """Wait until every live bot has placed an order that the exchange accepted after `since_ms`."""
    wait_until(lambda: all(orders_after(scenario, since_ms).values()), what, timeout=timeout, every=0.25)


def rows_by_client_order_id(cids: Iterable[str]) -> Counter[str]:
    return Counter(Order.objects.filter(client_order_id__in=list(cids)).values_list("client_order_id", flat=True))
