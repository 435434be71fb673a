from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every figure printed in this run, for the summary table and its JSON copy at the end of `make bench`.
_FIGURES: list[tuple[str, dict[str, str]]] = []


def report(title: str, figures: dict[str, str]) -> None:
    """Print one benchmark's figures; `make bench` shows them (pytest -s) and sums them up at the end."""
    width = max(len(k) for k in figures)
    print(f"\n[bench] {title}")
    for key, value in figures.items():
        print(f"  {key.ljust(width)}  {value}")
    _FIGURES.append((title, {str(k): str(v) for k, v in figures.items()}))


@pytest.fixture
def bench_report() -> Callable[[str, dict[str, str]], None]:
    return report


def bench_output_dir() -> Path:
    """Where `make bench` writes its JSON summary: BENCH_OUT, else var/bench/ (git-ignored)."""
    return Path(os.environ.get("BENCH_OUT", ROOT / "var" / "bench"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    write = terminalreporter.write_line
    terminalreporter.section("bench summary")
    for title, figures in _FIGURES:
        write(title)
        width = max(len(k) for k in figures)
        for key, value in figures.items():
            write(f"    {key.ljust(width)}  {value}")
    out = bench_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"bench-{stamp}.json"
    path.write_text(json.dumps([{"bench": t, "figures": f} for t, f in _FIGURES], indent=2) + "\n")
    write(f"written to {path}")
