"""Helpers for tests that run the whole machinery: the fleet supervisor, a real control worker, Valkey stopped.

- Fixtures `worker_env`, `fleet_vault`, `fleet` (as in tests/bots; import them into a test module to use them).
- `FleetLoop`: a `Fleet` running its own loop in a thread, as `manage.py runfleet` does, so that it
  reacts to a kill while the test waits for the report.
- `ControlWorker`: a real `celery worker -Q control` process (the kill task and the kill poller).
- `valkey_stopped`: stop this test session's embedded Valkey for real and start it again afterwards,
  whatever happens inside the block.
- `frozen`: SIGSTOP a process (e.g. the sandbox exchange) and SIGCONT it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection

from apps.bots.fleet import Fleet
from apps.vault import client as vault
from launcher.embedded import EmbeddedServices, stop_process_group
from tests.harness import Harness
from tests.processes import process_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def worker_env(services: Harness, sandbox_url: str, tmp_path: Path) -> dict[str, str]:
    """What a supervisor started by `make run` passes on (without its own token), pointed at the test database."""
    return process_env(services, token=services.tokens["fleet"].token, var_dir=tmp_path, sandbox_url=sandbox_url)


@pytest.fixture
def fleet_vault(services: Harness) -> vault.ProcessVault:
    return vault.ProcessVault(services.vault_addr, services.tokens["fleet"].token)


def _supervisor(
    fleet_vault: vault.ProcessVault, worker_env: dict[str, str], tmp_path: Path, mode: str | None
) -> Iterator[Fleet]:
    supervisor = Fleet(
        process_vault=fleet_vault,
        env=worker_env,
        grace_s=10,
        log_dir=tmp_path / "logs",
        worker_mode=mode or str(settings.FLEET_WORKER_MODE),
    )
    try:
        # In fork mode a worker starts only once the template has preloaded: a test's first pass then starts it.
        assert supervisor.warm_up(), "the bot worker template did not get ready"
        yield supervisor
    finally:
        supervisor.shutdown()
        for log in sorted((tmp_path / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def fleet(fleet_vault: vault.ProcessVault, worker_env: dict[str, str], tmp_path: Path) -> Iterator[Fleet]:
    """A supervisor in the default worker mode (FLEET_WORKER_MODE: fork)."""
    yield from _supervisor(fleet_vault, worker_env, tmp_path, None)


@pytest.fixture
def fork_fleet(fleet_vault: vault.ProcessVault, worker_env: dict[str, str], tmp_path: Path) -> Iterator[Fleet]:
    """A supervisor that forks its workers from the preloaded template (FLEET_WORKER_MODE=fork)."""
    yield from _supervisor(fleet_vault, worker_env, tmp_path, "fork")


@pytest.fixture
def spawn_fleet(fleet_vault: vault.ProcessVault, worker_env: dict[str, str], tmp_path: Path) -> Iterator[Fleet]:
    """A supervisor that starts each worker as a fresh `celery worker` process (FLEET_WORKER_MODE=spawn)."""
    yield from _supervisor(fleet_vault, worker_env, tmp_path, "spawn")


def memory_holds(pid: int, needles: list[str]) -> set[str]:
    """Which of `needles` appear anywhere in the readable memory of process `pid` (read via /proc/<pid>/mem)."""
    wanted = {n: n.encode() for n in needles}
    found: set[str] = set()
    overlap = max(len(b) for b in wanted.values())
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        regions = [line.split() for line in maps]
        for region in regions:
            start, end = (int(x, 16) for x in region[0].split("-"))
            if "r" not in region[1] or (len(region) > 5 and region[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]")):
                continue
            tail = b""
            for offset in range(start, end, 1 << 22):
                try:
                    mem.seek(offset)
                    chunk = tail + mem.read(min(1 << 22, end - offset))
                except (OSError, ValueError):
                    tail = b""
                    continue
                found |= {name for name, raw in wanted.items() if raw in chunk}
                tail = chunk[-overlap:]
    return found


def wait_until(check: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


class FleetLoop:
    """`Fleet.run()` in a background thread; `stop()` ends the loop, which stops every worker it started."""

    def __init__(self, fleet: Fleet, poll_s: float = 0.5) -> None:
        self.fleet = fleet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(poll_s,), name="fleet-loop", daemon=True)

    def _run(self, poll_s: float) -> None:
        try:
            self.fleet.run(poll_s=poll_s, stop=self._stop)
        finally:
            connection.close()  # this thread's own database connection

    def start(self) -> FleetLoop:
        self._thread.start()
        return self

    def pids(self) -> dict[int, int]:
        return {bot_id: worker.pid for bot_id, worker in list(self.fleet.workers.items())}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


class ControlWorker:
    """`celery -A botconsole worker -Q control` with the control token, as `make run` starts it."""

    def __init__(
        self, services: Harness, var_dir: Path, sandbox_url: str, *, wrap: Sequence[str] = (), **overrides: str
    ) -> None:
        self.log_path = var_dir / "control-worker.log"
        # The circuit breakers have their own tests (tests/killswitch/test_breakers.py); here they would
        # race the scenario (e.g. the order-rate breaker halting bots while their grids are being placed),
        # unless a test asks for them (`BREAKERS_EVERY_S="1"` in `overrides`, which add to the environment).
        env = process_env(
            services,
            token=services.tokens["control"].token,
            var_dir=var_dir,
            sandbox_url=sandbox_url,
            **{"BREAKERS_EVERY_S": "86400", **overrides},
        )
        # `wrap`: a command that runs the worker (e.g. in a mount namespace of its own, tests/faults).
        argv = [
            *wrap,
            sys.executable,
            "-m",
            "celery",
            "-A",
            "botconsole",
            "worker",
            "-Q",
            "control",
            "-n",
            f"control-{os.getpid()}@%h",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
        ]
        var_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the control worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return "kill poller started" in self.log()

        wait_until(ready, "the control worker's kill poller", timeout=timeout)

    def stop(self) -> None:
        stop_process_group(self.proc, signal.SIGTERM, timeout=20)


def embedded(services: Harness, name: str) -> EmbeddedServices:
    """The session's embedded servers, with `name` ("postgres", "valkey", "openbao") among them."""
    found = services.services
    if found is None or not any(s.name == name for s in found.services):
        raise AssertionError(
            f"this test stops the embedded {name} for real: it needs the test session's own server "
            "(DATABASE_URL / REDIS_URL / VAULT_ADDR unset)"
        )
    return found


def _redis_answers() -> bool:
    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def valkey_stopped(services: Harness) -> Iterator[None]:
    """Stop the session's Valkey (its port refuses connections) and always start it again on the same port."""
    servers = embedded(services, "valkey")
    servers.stop_one("valkey")
    try:
        assert not _redis_answers(), "Valkey still answers after it was stopped"
        yield
    finally:
        servers.start_one("valkey")  # waits until it answers PING
        wait_until(_redis_answers, "Valkey to answer again", timeout=30)


@contextlib.contextmanager
def frozen(proc: subprocess.Popen[Any]) -> Iterator[Callable[[], None]]:
    """SIGSTOP a process; the block may thaw it early with the callable it gets; it is thawed at the end anyway."""

    def thaw() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)

    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield thaw
    finally:
        thaw()
