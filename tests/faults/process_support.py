"""Helpers of the process-fault tests: the fleet supervisor as a real process, a watch over the bot worker processes
of one test's deployment, whole-group freeze and kill, and the books of the sandbox against the database.

- `Supervisor`: `manage.py runfleet` as `make run` starts it (a process of its own, so it can be SIGKILLed for real).
- `worker_processes` / `WorkerWatch`: the live `celery worker -Q bot.<id>` processes (spawned or forked) whose
  environment names this test's var dir, so that other test sessions on the machine are never counted or touched.
- `books`: every order of the given keys on the sandbox against the Order and Fill rows.
- `fault_line`: the one line each fault test prints.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.trading.models import Fill, Order
from launcher.embedded import stop_process_group
from tests.faults.support import Books as fault_books
from tests.faults.support import fault_report
from tests.fleet_support import alive, wait_until
from tests.harness import Harness
from tests.processes import process_env

ROOT = Path(__file__).resolve().parents[2]
QUEUE_RE = re.compile(rb"-Q bot\.(\d+)(?:\s|$)")
OPEN = ("NEW", "PARTIALLY_FILLED")
GRID_TAG_RE = re.compile(r"(grid-\d+-(?:buy|sell))$")


def trading_bot(acct: ExchangeAccount, strategy: str, params: dict[str, Any], mode: str = Bot.Mode.LIVE) -> Bot:
    """A started bot ticking every second on BTC/USDT, with limits no scenario here reaches."""
    return Bot.objects.create(
        name=f"faults-{strategy}-{mode}-{acct.pk.hex[:8]}",
        account=acct,
        strategy=strategy,
        params=params,
        symbols=["BTC/USDT"],
        mode=mode,
        tick_interval_s=1,
        max_order_notional=Decimal("100"),
        max_position_notional=Decimal("5000"),
        max_open_orders=50,
        max_orders_per_minute=200,
        daily_loss_limit=Decimal("100000"),
        max_drawdown_pct=Decimal("90"),
        desired_state=Bot.Desired.RUNNING,
    )


@pytest.fixture
def supervisor_env(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment `make run` gives the fleet supervisor (its token only), its var dir this test's own."""
    env = process_env(services, token=services.tokens["fleet"].token, var_dir=tmp_path / "var", sandbox_url=sandbox_url)
    yield env
    kill_leftovers(Path(env["BOTCONSOLE_VAR_DIR"]))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def worker_processes(var_dir: Path) -> dict[int, set[int]]:
    """Live bot worker processes (not zombies) started for the deployment whose BOTCONSOLE_VAR_DIR is `var_dir`."""
    marker = b"\0BOTCONSOLE_VAR_DIR=" + str(var_dir).encode() + b"\0"
    found: dict[int, set[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        queue = QUEUE_RE.search(_read(f"/proc/{pid}/cmdline").replace(b"\0", b" "))
        if queue is None or marker not in b"\0" + _read(f"/proc/{pid}/environ") + b"\0" or not alive(pid):
            continue
        found.setdefault(int(queue.group(1)), set()).add(pid)
    return found


@dataclass
class WorkerWatch:
    """Samples the bot worker processes every `every` seconds in a thread: which ran, and how many at once per bot."""

    var_dir: Path
    every: float = 0.1
    seen: dict[int, set[int]] = field(default_factory=dict)
    most: Counter[int] = field(default_factory=Counter)
    overlaps: list[tuple[float, int, set[int]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> dict[int, set[int]]:
        now = worker_processes(self.var_dir)
        for bot_id, pids in now.items():
            self.seen.setdefault(bot_id, set()).update(pids)
            self.most[bot_id] = max(self.most[bot_id], len(pids))
            if len(pids) > 1:
                self.overlaps.append((time.monotonic(), bot_id, set(pids)))
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> WorkerWatch:
        self._thread = threading.Thread(target=self._run, name="worker-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class Supervisor:
    """`python manage.py runfleet` in a session of its own, with the fleet token, as `make run` starts it."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "runfleet", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def own_lines(self) -> str:
        """The supervisor's own lines (its workers write to the same log)."""
        keep = ("apps.bots", "fleet", "ERROR", "Traceback", "Error")
        return "\n".join(line for line in self.log().splitlines() if any(k in line for k in keep))

    def wait_running(self, timeout: float = 60.0) -> None:
        def running() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the supervisor exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return "fleet supervisor running" in self.log()

        wait_until(running, "the fleet supervisor to run", timeout=timeout, every=0.05)

    def kill(self) -> None:
        """SIGKILL the supervisor alone: no handler runs, its workers are left to themselves."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, as systemd or Ctrl-C: the supervisor stops its workers in order, then exits."""
        stop_process_group(self.proc, signal.SIGTERM, timeout=60)


def kill_leftovers(var_dir: Path) -> None:
    """Whatever a failed test left running for its deployment: SIGKILL it (test hygiene, not under test)."""
    for pids in worker_processes(var_dir).values():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def group_frozen(pid: int) -> Iterator[Callable[[], None]]:
    """SIGSTOP a whole process group (a Celery worker and its pool); the block may thaw it early; thawed at the end."""

    def thaw() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)

    os.killpg(pid, signal.SIGSTOP)
    try:
        yield thaw
    finally:
        thaw()


@dataclass
class Books:
    """Every order of some keys on the sandbox against the database."""

    placed: int = 0
    unrecorded: list[str] = field(default_factory=list)  # client order ids on the exchange with no Order row
    duplicates: int = 0  # one intent on the exchange twice: a client order id twice, or a grid level resting twice
    fills_lost: int = 0  # orders whose filled amount on the exchange is not all in Fill rows
    open_now: int = 0


def books(sandbox: Any, api_keys: list[str]) -> Books:
    result = Books()
    for api_key in api_keys:
        remote = sandbox.admin.orders(api_key)
        cids = [str(o["clientOrderId"]) for o in remote]
        rows = {o.client_order_id: o for o in Order.objects.filter(client_order_id__in=cids, paper=False)}
        result.placed += len(remote)
        result.duplicates += sum(n - 1 for n in Counter(cids).values())
        resting = [
            GRID_TAG_RE.search(str(o["clientOrderId"])) for o in remote if o["status"] in ("NEW", "PARTIALLY_FILLED")
        ]
        result.open_now += len(resting)
        result.duplicates += sum(n - 1 for n in Counter(m.group(1) for m in resting if m).values())
        for order in remote:
            row = rows.get(str(order["clientOrderId"]))
            if row is None or row.exchange_order_id != str(order["orderId"]):
                result.unrecorded.append(str(order["clientOrderId"]))
                continue
            stored = sum((f.amount for f in Fill.objects.filter(order=row)), Decimal(0))
            if stored != Decimal(str(order["executedQty"])):
                result.fills_lost += 1
    return result


@dataclass
class Phases:
    """When each phase of a fault test was reached, in seconds from its start (printed with the fault line)."""

    started: float = field(default_factory=time.monotonic)
    marks: list[tuple[str, float]] = field(default_factory=list)

    def mark(self, name: str) -> float:
        now = time.monotonic()
        self.marks.append((name, now - self.started))
        return now

    def __str__(self) -> str:
        return " ".join(f"{name}@{at:.1f}" for name, at in self.marks)


def fault_line(name: str, *, phases: Phases, books: Books, recovery_s: float) -> str:
    """The shared report line (tests/faults/support.py), with this test's whole length as its duration."""
    print(f"{name} phases: {phases}")
    shared = fault_books(
        orders_placed=books.placed,
        duplicates=books.duplicates,
        orders_lost=len(books.unrecorded),
        fills_lost=books.fills_lost,
    )
    return fault_report(name, duration_s=time.monotonic() - phases.started, books=shared, recovery_s=recovery_s)
