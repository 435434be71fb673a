"""Four processes appending at once (as the web server, the workers and the fleet do) keep one gapless chain."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify_chain
from tests.harness import Harness
from tests.processes import process_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)
PER_WRITER = 120

# Writers 0 and 1 append on their own (each entry its own transaction); writers 2 and 3 append inside
# transactions of 4 entries with a change around them, one transaction in three rolled back.
WRITER = """
import os, sys, time
import django
django.setup()
from django.db import transaction
from apps.audit.services import record
go, writer, per_writer = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
if writer < 2:
    for i in range(per_writer):
        record(actor="system:test", action=f"writer.{writer}", data={"i": i})
else:
    written, attempt = 0, 0
    while written < per_writer:
        attempt += 1
        try:
            with transaction.atomic():
                for _ in range(4):
                    record(actor="system:test", action=f"writer.{writer}", data={"i": written, "attempt": attempt})
                    written += 1
                if attempt % 3 == 0:
                    raise RuntimeError("roll back")
        except RuntimeError:
            written -= 4
            record(actor="system:test", action=f"writer.{writer}.rolled_back", data={"attempt": attempt})
print("done", flush=True)
"""


def test_four_processes_appending_at_once_keep_one_gapless_chain_that_verifies(
    services: Harness, tmp_path: Path
) -> None:
    env = process_env(services, token="", var_dir=tmp_path)
    go = tmp_path / "go"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(go), str(n), str(PER_WRITER)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    try:
        for proc in writers:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        go.touch()  # all four start together
        for proc in writers:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0 and out.strip() == "done", err[-2000:]
    finally:
        for proc in writers:
            if proc.poll() is None:
                proc.kill()

    entries = list(AuditEntry.objects.order_by("seq").values_list("seq", "action", "data"))
    assert [seq for seq, _, _ in entries] == list(range(1, len(entries) + 1))  # gapless, rollbacks included
    for n in range(4):
        kept = [data["i"] for _, action, data in entries if action == f"writer.{n}"]
        assert kept == list(range(PER_WRITER))  # every committed entry once, in its writer's order
    for n in (2, 3):  # a rolled-back transaction took its entries with it; only the note after it is there
        attempts = {data["attempt"] for _, action, data in entries if action == f"writer.{n}"}
        notes = [data["attempt"] for _, action, data in entries if action == f"writer.{n}.rolled_back"]
        assert notes and all(a % 3 == 0 for a in notes) and not attempts & set(notes)
    switches = sum(1 for a, b in itertools.pairwise(entries) if a[1] != b[1])
    assert switches > 20  # the writers really interleaved
    report = audit_verify_chain()
    assert report.ok and report.checked == len(entries)
