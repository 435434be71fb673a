from __future__ import annotations

from collections.abc import Callable

import pytest


def report(title: str, figures: dict[str, str]) -> None:
    """Print one benchmark's figures; `make bench` shows them (pytest -s)."""
    width = max(len(k) for k in figures)
    print(f"\n[bench] {title}")
    for key, value in figures.items():
        print(f"  {key.ljust(width)}  {value}")


@pytest.fixture
def bench_report() -> Callable[[str, dict[str, str]], None]:
    return report
