"""The chain verified in slices by forked processes gives the sequential walk's answer, breaks included.

Real PostgreSQL: the children read with connections of their own, so the entries are committed first
(transaction=True). The slice size is lowered so that a few dozen entries make three slices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import override_settings

from apps.audit import verify
from apps.audit.services import audit_verify_chain
from apps.audit.verify import ChainReport
from tests.audit.test_chain import _tamper, _write

pytestmark = pytest.mark.django_db(transaction=True)
ENTRIES = 60  # three slices: (0, 20], (20, 40], (40, 60]


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Lower the threshold and note each slice a child was forked for (the real fork still runs)."""
    monkeypatch.setattr(verify, "PARALLEL_MIN_ENTRIES", 10)
    seen: list[tuple[int, int]] = []
    real: Callable[..., tuple[int, int]] = verify._fork_slice

    def noted(params: dict[str, Any], lo: int, hi: int, chunk_size: int, start_hash: str) -> tuple[int, int]:
        seen.append((lo, hi))
        return real(params, lo, hi, chunk_size, start_hash)

    monkeypatch.setattr(verify, "_fork_slice", noted)
    return seen


def _both() -> tuple[ChainReport, ChainReport]:
    with override_settings(AUDIT_VERIFY_PROCESSES=3):
        parallel = audit_verify_chain(chunk_size=7)
    with override_settings(AUDIT_VERIFY_PROCESSES=1):
        sequential = audit_verify_chain(chunk_size=7)
    return parallel, sequential


def test_an_intact_chain_checks_out_in_three_processes(forks: list[tuple[int, int]]) -> None:
    _write(ENTRIES)
    parallel, sequential = _both()
    assert forks == [(20, 40), (40, 60)]  # two children; the first slice is checked here
    assert parallel == sequential
    assert parallel.ok and parallel.checked == ENTRIES and parallel.last_seq == ENTRIES


def test_a_changed_entry_in_a_childs_slice_is_named_as_the_walk_names_it(forks: list[tuple[int, int]]) -> None:
    _write(ENTRIES)
    _tamper("UPDATE audit_auditentry SET data = '{\"i\": 999}' WHERE seq = 47")
    parallel, sequential = _both()
    assert forks  # the slices ran in children
    assert not parallel.ok and parallel.broken_seq == 47 and "content" in parallel.reason
    assert parallel == sequential and parallel.checked == 46


def test_a_changed_last_entry_of_a_slice_breaks_the_chain_there(forks: list[tuple[int, int]]) -> None:
    # Entry #40 is where the third slice starts from: the second slice must catch it.
    _write(ENTRIES)
    _tamper("UPDATE audit_auditentry SET actor = 'system:forged' WHERE seq = 40")
    parallel, sequential = _both()
    assert not parallel.ok and parallel.broken_seq == 40
    assert parallel == sequential


def test_missing_entries_inside_a_slice_and_at_its_edge_are_named(forks: list[tuple[int, int]]) -> None:
    _write(ENTRIES)
    _tamper("DELETE FROM audit_auditentry WHERE seq = 33")
    parallel, sequential = _both()
    assert not parallel.ok and parallel.broken_seq == 33 and "missing" in parallel.reason
    assert parallel == sequential
    _tamper("DELETE FROM audit_auditentry WHERE seq = 20")  # a slice edge: walked in this process instead
    forks.clear()
    parallel, sequential = _both()
    assert forks == [] and not parallel.ok and parallel.broken_seq == 20 and parallel == sequential
