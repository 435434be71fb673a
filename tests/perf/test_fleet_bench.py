"""Bot workers: memory (PSS) per running worker with 1, 5 and 10 bots; ticks one worker sustains."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from apps.bots.fleet import Fleet
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from tests.bots.conftest import account  # noqa: F401
from tests.bots.test_fleet import make_bot, observed, wait_for
from tests.fleet_support import fleet, fleet_vault, worker_env  # noqa: F401
from tests.keys import Key

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]
TICK_LINE = re.compile(r"bot_tick_task\[[0-9a-f-]+\] succeeded in ([0-9.]+)s")


def pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children: shared pages counted by share."""
    total = 0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for line in Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def all_running(bots: list[Bot]) -> Callable[[], bool]:
    return lambda: all(observed(b) == "running" for b in bots)


def test_memory_per_bot_worker(
    fleet: Fleet,  # noqa: F811
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    bench_report: Report,
) -> None:
    acct, _ = account("Bench memory")
    figures: dict[str, str] = {}
    bots: list[Bot] = []
    for target in (1, 5, 10):
        bots += [make_bot(acct, f"bench-mem-{i}", mode="paper") for i in range(len(bots), target)]
        wait_for(all_running(list(bots)), f"{target} workers", timeout=120, fleet=fleet)
        time.sleep(3)  # let every worker run a few ticks so its heap reaches its working size
        sizes = [pss_mb(w.pid) for w in fleet.workers.values()]
        figures[f"{target:>2} bots, PSS per worker"] = (
            f"mean {statistics.mean(sizes):.1f} MB, max {max(sizes):.1f} MB, total {sum(sizes):.0f} MB"
        )
    bench_report("bot worker memory (paper bots, celery -P solo)", figures)


def test_ticks_one_worker_sustains(
    fleet: Fleet,  # noqa: F811
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    bench_report: Report,
    tmp_path: Path,
) -> None:
    try:
        from apps.trading.tick import tick_run  # noqa: F401
    except ImportError:
        bench_report("bot ticks", {"ticks per second": "not measured (apps.trading.tick is not available)"})
        return
    acct, _ = account("Bench ticks")
    bot = make_bot(acct, "bench-ticks", mode="paper")
    wait_for(lambda: observed(bot) == "running", "the worker", fleet=fleet)
    log = tmp_path / "logs" / f"bot-{bot.pk}.log"
    wait_for(lambda: len(TICK_LINE.findall(log.read_text())) >= 10, "ten ticks", timeout=60, fleet=fleet)
    durations = [float(d) for d in TICK_LINE.findall(log.read_text())][1:]  # the first warms caches up
    mean = statistics.mean(durations)
    p95 = sorted(durations)[int(len(durations) * 0.95)]
    bench_report(
        "bot ticks (paper bot, sandbox exchange, tick_interval_s=1)",
        {
            "ticks measured": str(len(durations)),
            "tick duration": f"mean {mean * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms",
            "ticks/s one worker sustains": f"{1 / mean:.1f} (the tick interval, >= 1 s, is the real limit)",
        },
    )
