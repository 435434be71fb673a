"""Fault 10: the disk of the audit checkpoint file is full.

The control worker runs in a mount namespace of its own (`unshare`), where the checkpoint file's directory is a
tmpfs of TMPFS_SIZE; the test fills it through the worker's view of it (/proc/<pid>/root) until the kernel
refuses with ENOSPC. A real full filesystem, and not the machine's: it exists for that one process tree and
vanishes with it. Then the control worker is asked for checkpoints (its task, as beat asks every ten minutes):
the full disk must raise an alert (stored, audited, once for a failure that repeats), sign nothing, and the
next checkpoint after space is freed must cover every entry written meanwhile, the alert's own included, with
the database and the file agreeing (audit_verify). No trading is involved: the books line reports zeros.

A disk that fills part-way through a line is the second test: the kernel's file-size limit (RLIMIT_FSIZE) makes
the same short write a nearly full disk makes; the line must not be left torn in the file.
"""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.alerts.models import Alert
from apps.audit.checkpoints import SignedCheckpoint, audit_verify, checkpoint_file_append, checkpoint_file_read
from apps.audit.models import AuditCheckpoint, AuditEntry, AuditVerification
from apps.audit.services import record
from apps.audit.tasks import audit_checkpoint_task
from apps.vault import client as vault
from tests.faults.support import Books, Outage, fault_report
from tests.fleet_support import ControlWorker, wait_until
from tests.harness import Harness

pytestmark = pytest.mark.django_db(transaction=True)

FAULT_TIMEOUT_S = 150.0
TMPFS_SIZE = "64k"
PAGE_LINES_MAX = 40  # checkpoint lines (about 200 bytes each) that fit in the file's last 4 KiB page, at most


def _mount_namespace(directory: Path) -> list[str]:
    """Run a command with a tmpfs of its own on `directory` (a user namespace too, so no root is needed)."""
    mount = f'mount -t tmpfs -o size={TMPFS_SIZE},mode=0700 botconsole-audit "$0" && exec "$@"'
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        mount,
        str(directory),
    ]


def _fill(directory: Path) -> int:
    """Write a file into `directory` until the filesystem is full; returns the bytes it took."""
    written = 0
    with open(directory / "filler", "wb", buffering=0) as out:
        try:
            while True:
                written += out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return written


def _entries(n: int) -> None:
    for i in range(n):
        record(actor="system:test", action="test.checkpoint_disk", target=("thing", i), data={"i": i})


def _checkpoints() -> int:
    return AuditCheckpoint.objects.count()


def _failures() -> int:
    return AuditVerification.objects.filter(status=AuditVerification.Status.ERROR).count()


def _checkpoint_once() -> None:
    """Write an entry and ask the control worker for a checkpoint (its task); wait until it signed or failed."""
    signed, failed = _checkpoints(), _failures()
    _entries(1)
    audit_checkpoint_task.delay()
    wait_until(lambda: _checkpoints() > signed or _failures() > failed, "the checkpoint task", timeout=30)


def test_a_full_checkpoint_disk_raises_an_alert_signs_nothing_and_the_next_checkpoint_covers_everything(
    services: Harness, sandbox_url: str, tmp_path: Path, settings: Any, control_vault: vault.ProcessVault
) -> None:
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    worker = ControlWorker(
        services,
        tmp_path / "control",
        sandbox_url,
        wrap=_mount_namespace(audit_dir),
        AUDIT_CHECKPOINT_FILE=str(audit_dir / "checkpoints.jsonl"),
    )
    try:
        worker.wait_ready()
        seen = Path(f"/proc/{worker.proc.pid}/root") / audit_dir.relative_to("/")  # the worker's tmpfs
        assert os.statvfs(seen).f_blocks * os.statvfs(seen).f_frsize <= 64 * 1024, "not the worker's tmpfs"
        settings.AUDIT_CHECKPOINT_FILE = seen / "checkpoints.jsonl"  # verification from here reads the same file

        _entries(3)
        _checkpoint_once()
        assert _checkpoints() == 1
        assert _fill(seen) > 0

        # Full, but the file's last page still has room: checkpoints go on until a line needs a new page. That
        # one gets the rest of the page (a short write) and then ENOSPC.
        with Outage("disk_full") as outage:
            for _ in range(PAGE_LINES_MAX):
                _checkpoint_once()
                if _failures():
                    break
            alert = Alert.objects.filter(kind="audit_checkpoint_failed").first()
            assert alert is not None, f"{_checkpoints()} checkpoints fitted on the full disk, and no alert"
            # The next attempt fails the same way: recorded, not alerted twice, nothing signed.
            signed = _checkpoints()
            _checkpoint_once()
            assert _failures() == 2 and _checkpoints() == signed
            (seen / "filler").unlink()
        head = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True)[0]
        _checkpoint_once()
        assert _checkpoints() == signed + 1, "no checkpoint once there is space again"
        recovery_s = (timezone.now() - outage.ended).total_seconds()

        assert "No space left on device" in alert.message and alert.severity == "critical", alert.message
        assert Alert.objects.filter(kind="audit_checkpoint_failed").count() == 1
        audited = AuditEntry.objects.get(action="alert.audit_checkpoint_failed")
        latest = AuditCheckpoint.objects.order_by("-seq").first()
        assert latest is not None and latest.seq >= head >= audited.seq  # the entries and the alert's, covered
        in_file, problems = checkpoint_file_read(seen / "checkpoints.jsonl")
        assert problems == [] and [c.seq for c in in_file] == list(
            AuditCheckpoint.objects.order_by("seq").values_list("seq", flat=True)
        )
        report = audit_verify(source="system:test", process_vault=control_vault)
        assert report.ok and report.checkpoints_checked == _checkpoints(), report.text()
    finally:
        worker.stop()
        print(f"--- control worker\n{worker.log()[-3000:]}")
    fault_report("checkpoint_disk_full", duration_s=outage.duration_s, books=Books(), recovery_s=recovery_s)


def test_a_disk_filling_up_part_way_through_a_checkpoint_line_leaves_no_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.jsonl"
    first = SignedCheckpoint(1, "a" * 64, timezone.now(), "vault:v1:" + "s" * 88)
    checkpoint_file_append(path, first)
    size = path.stat().st_size
    second = SignedCheckpoint(2, "b" * 64, timezone.now(), "vault:v1:" + "t" * 88)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Room for 40 more bytes: the kernel takes 40 of the line (a short write) and refuses the rest (EFBIG).
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
    with Outage("mid_line") as outage:
        try:
            with pytest.raises(OSError) as refused:
                checkpoint_file_append(path, second)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert refused.value.errno == errno.EFBIG
    assert path.stat().st_size == size  # the 40 bytes it took were cut off again
    in_file, problems = checkpoint_file_read(path)
    assert problems == [] and [c.key() for c in in_file] == [first.key()]
    checkpoint_file_append(path, second)  # and the next append is a whole line after a whole line
    in_file, problems = checkpoint_file_read(path)
    assert problems == [] and [c.key() for c in in_file] == [first.key(), second.key()]
    fault_report("checkpoint_disk_full_mid_line", duration_s=outage.duration_s, books=Books(), recovery_s=0.0)
