"""Bot workers: memory (PSS) per extra bot with 1, 5 and 10 bots and worker ready time, spawned vs forked; ticks.

"spawn" is a fresh `celery worker` process per bot (FLEET_WORKER_MODE's default); "fork" forks each worker
from the preloaded template (apps/bots/zygote.py), whose own PSS is counted in the fleet's total. Next to
them, the floor: a bare `python -c pass` and a bare `python -c "import ccxt"`.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from apps.bots.fleet import Fleet
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from apps.vault import client as vault
from tests.bots.conftest import account  # noqa: F401
from tests.bots.test_fleet import make_bot, observed, wait_for
from tests.fleet_support import fleet, fleet_vault, worker_env  # noqa: F401
from tests.keys import Key

pytestmark = [pytest.mark.bench, pytest.mark.django_db(transaction=True)]
Report = Callable[[str, dict[str, str]], None]
TICK_LINE = re.compile(r"bot_tick_task\[[0-9a-f-]+\] succeeded in ([0-9.]+)s")
SAMPLES = 5  # PSS samples per fleet size (1 s apart; the median is reported), ready-time runs per mode


def pss_mb(pid: int) -> float:
    """Proportional set size of a process and its children: shared pages counted by share."""
    total = 0
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for line in Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total / 1024


def floor_pss_mb(code: str) -> float:
    """Median PSS of a bare interpreter running `code` (then sleeping), over SAMPLES runs."""
    sizes = []
    for _ in range(SAMPLES):
        proc = subprocess.Popen(
            [sys.executable, "-c", f"{code}\nimport sys, time\nprint('ready', flush=True)\ntime.sleep(60)"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            sizes.append(pss_mb(proc.pid))
        finally:
            proc.kill()
            proc.wait(timeout=10)
    return statistics.median(sizes)


def all_running(bots: list[Bot]) -> Callable[[], bool]:
    return lambda: all(observed(b) == "running" for b in bots)


@pytest.fixture
def fleet_of(
    fleet_vault: vault.ProcessVault,  # noqa: F811
    worker_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> Iterator[Callable[[str], Fleet]]:
    started: list[Fleet] = []

    def make(mode: str) -> Fleet:
        supervisor = Fleet(
            process_vault=fleet_vault, env=worker_env, grace_s=10, log_dir=tmp_path / mode, worker_mode=mode
        )
        started.append(supervisor)
        return supervisor

    yield make
    for supervisor in started:
        supervisor.shutdown()


def _fleet_pss(supervisor: Fleet) -> tuple[list[float], float]:
    """Each worker's PSS and the template's (0 when spawning)."""
    workers = [pss_mb(w.pid) for w in supervisor.workers.values()]
    template = supervisor.template.pid if supervisor.template is not None else None
    return workers, (pss_mb(template) if template else 0.0)


def test_memory_per_bot_worker_spawned_and_forked(
    fleet_of: Callable[[str], Fleet],
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    bench_report: Report,
) -> None:
    acct, _ = account("Bench memory")
    bare, with_ccxt = floor_pss_mb("pass"), floor_pss_mb("import ccxt")
    figures = {
        "floor: python -c pass": f"{bare:.1f} MB",
        "floor: python -c 'import ccxt'": f"{with_ccxt:.1f} MB",
    }
    per_extra: dict[str, float] = {}
    for mode in ("spawn", "fork"):
        supervisor = fleet_of(mode)
        bots: list[Bot] = []
        totals: dict[int, float] = {}
        for target in (1, 5, 10):
            bots += [make_bot(acct, f"bench-{mode}-{i}", mode="paper") for i in range(len(bots), target)]
            wait_for(all_running(list(bots)), f"{target} {mode} workers", timeout=300, fleet=supervisor)
            time.sleep(3)  # let every worker run a few ticks so its heap reaches its working size
            samples = []
            for _ in range(SAMPLES):
                samples.append(_fleet_pss(supervisor))
                time.sleep(1)
            total = statistics.median(sum(w) + t for w, t in samples)
            workers = statistics.median(statistics.mean(w) for w, _ in samples)
            template = statistics.median(t for _, t in samples)
            totals[target] = total
            line = f"total {total:.0f} MB (template {template:.0f} MB), mean per worker {workers:.1f} MB"
            if target > 1:
                extra = (total - totals[1]) / (target - 1)
                per_extra[f"{mode} {target}"] = extra
                line += f", per extra bot {extra:.1f} MB ({extra / with_ccxt:.2f}x the ccxt floor)"
            figures[f"{mode:>5} {target:>2} bots"] = line
        Bot.objects.filter(pk__in=[b.pk for b in bots]).update(desired_state="stopped")
        supervisor.shutdown()
    for n in (5, 10):
        figures[f"fork/spawn per extra bot at {n}"] = f"{per_extra[f'fork {n}'] / per_extra[f'spawn {n}']:.2f}"
    bench_report("bot worker memory (paper bots, celery -P solo, PSS from smaps_rollup, median of 5)", figures)


def test_worker_ready_time_spawned_and_forked(
    fleet_of: Callable[[str], Fleet],
    account: Callable[[str], tuple[ExchangeAccount, Key]],  # noqa: F811
    bench_report: Report,
) -> None:
    """From the supervisor's start (Vault identity issued) to the worker logged in and marked running (live bot)."""
    acct, _ = account("Bench ready")
    figures: dict[str, str] = {}
    medians: dict[str, float] = {}
    for mode in ("spawn", "fork"):
        supervisor = fleet_of(mode)
        if mode == "fork":
            supervisor.sync_once()  # starts the template; timed on its own below
            assert supervisor.template is not None
            started = time.monotonic()
            assert supervisor.template.poll_ready(timeout=120)
            figures["fork: template preload (once)"] = f"{time.monotonic() - started:.2f} s"
        times = _ready_times(supervisor, make_bot(acct, f"bench-ready-{mode}", desired="stopped"))
        medians[mode] = statistics.median(times)
        figures[f"{mode}: ready"] = f"median {medians[mode]:.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)})"
        supervisor.shutdown()
    figures["fork/spawn ready time"] = f"{medians['fork'] / medians['spawn']:.2f}"
    bench_report("bot worker ready time (live bot: identity issued -> logged in, running)", figures)


def _ready_times(supervisor: Fleet, bot: Bot) -> list[float]:
    """Start the bot's worker SAMPLES times (stopping it in between): seconds until it reports running."""
    times = []
    for _ in range(SAMPLES):
        Bot.objects.filter(pk=bot.pk).update(desired_state="running")
        bot.refresh_from_db()
        started = time.monotonic()
        assert supervisor.start(bot) is not None
        while observed(bot) != "running":  # polled every 10 ms: wait_for's 200 ms would be the resolution
            assert time.monotonic() - started < 120, f"the {supervisor.worker_mode} worker did not start"
            time.sleep(0.01)
        times.append(time.monotonic() - started)
        Bot.objects.filter(pk=bot.pk).update(desired_state="stopped")
        wait_for(lambda: bot.pk not in supervisor.workers, "the worker to stop", timeout=30, fleet=supervisor)
    return times


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
