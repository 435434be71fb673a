"""Fixtures of the fault tests: the trading scenario (tests/faults/support.py) and a hard time limit per test.

- `fault_scenario`: a `FaultScenario` not yet started (call `.start()`), on a real fleet supervisor whose
  workers are forked from the preloaded template (FLEET_WORKER_MODE=fork: the same `celery worker` code and
  bootstrap as a spawned worker, ready in a second instead of several, which keeps the suite's time budget).
  It is stopped afterwards (workers, price swing), the sandbox's price released.
- `fault_control_worker`: a real control worker (`celery worker -Q control`) with the circuit breakers
  checked every second, for faults whose breaker must trip.
- Every test here is bounded: FAULT_TIMEOUT_S (a module may set its own) after it starts, SIGALRM raises
  FaultTimeout in the test, so its `finally` blocks still restart and unseal the servers it stopped; if even
  that hangs, faulthandler dumps every thread's stack and ends the process HARD_STOP_GRACE_S later.
"""

from __future__ import annotations

import faulthandler
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from apps.bots.fleet import Fleet
from tests.faults.support import FaultScenario
from tests.fixtures.sandbox import SandboxProcess
from tests.fleet_support import ControlWorker, fleet_vault, fork_fleet, worker_env  # noqa: F401 - fixtures
from tests.harness import Harness
from tests.keys import Key

FAULT_TIMEOUT_S = 300.0
HARD_STOP_GRACE_S = 90.0


class FaultTimeout(Exception):
    """A fault test ran past its time limit."""


@pytest.fixture(autouse=True)
def hard_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    limit = float(getattr(request.module, "FAULT_TIMEOUT_S", FAULT_TIMEOUT_S))

    def expired(signum: int, frame: FrameType | None) -> None:
        raise FaultTimeout(f"{request.node.nodeid} ran past its limit of {limit:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, limit)
    faulthandler.dump_traceback_later(limit + HARD_STOP_GRACE_S, exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def fault_scenario(
    sandbox: SandboxProcess,
    new_key: Callable[..., Key],
    fork_fleet: Fleet,  # noqa: F811
) -> Iterator[FaultScenario]:
    scenario = FaultScenario(sandbox=sandbox, fleet=fork_fleet, new_key=new_key)
    try:
        yield scenario
    finally:
        scenario.stop()


@pytest.fixture
def fault_control_worker(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[ControlWorker]:
    worker = ControlWorker(services, tmp_path / "control", sandbox_url, BREAKERS_EVERY_S="1")
    try:
        yield worker
    finally:
        worker.stop()
        print(f"--- control worker\n{worker.log()[-3000:]}")
