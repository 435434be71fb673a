"""Signed checkpoints of the audit log, and verification of the log against them.

The hash chain alone shows an edited, deleted or reordered entry, but not a chain rewritten
from scratch by someone with database rights, nor a tail cut off, nor the whole database
rolled back to an earlier dump. Hence checkpoints: every few minutes the control worker signs
(seq, hash, time) of the last entry with the Vault transit key `audit-checkpoint` (which
never leaves Vault, and which only the control worker's policy may use) and stores the
signature twice: in the database and, appended, in a file outside it.

Verification then checks that
  - the chain is intact (apps.audit.services.audit_verify_chain);
  - every checkpoint's signature is valid;
  - every checkpoint's entry is still there with the signed hash (a rewritten chain, a cut
    tail, a rolled-back table all fail this);
  - the database's checkpoints and the file's are the same list (a rolled-back database lacks
    the file's latest ones; a truncated or replaced file lacks the database's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.audit.chain import GENESIS_HASH, canonical_time, checkpoint_message
from apps.audit.models import AuditCheckpoint, AuditEntry, AuditVerification
from apps.audit.services import audit_verify_chain
from apps.audit.signals import checkpoint_failed, tampering_found
from apps.vault import client as vault

logger = logging.getLogger(__name__)

# Serializes checkpoint writers and the reading of (database checkpoints, file) by verifiers,
# so that a verifier never sees a checkpoint in one place and not yet in the other.
CHECKPOINT_LOCK_KEY = 0x6175646370  # "audcp"
MAX_PROBLEMS = 50


@dataclass(frozen=True)
class SignedCheckpoint:
    seq: int
    entry_hash: str
    signed_at: datetime
    signature: str

    def message(self) -> bytes:
        return checkpoint_message(seq=self.seq, entry_hash=self.entry_hash, signed_at=self.signed_at)

    def key(self) -> tuple[int, str, str, str]:
        return (self.seq, self.entry_hash, canonical_time(self.signed_at), self.signature)

    def as_line(self) -> str:
        record = {
            "seq": self.seq,
            "hash": self.entry_hash,
            "signed_at": canonical_time(self.signed_at),
            "signature": self.signature,
        }
        return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"

    @classmethod
    def from_model(cls, row: AuditCheckpoint) -> SignedCheckpoint:
        return cls(row.seq, row.entry_hash, row.signed_at, row.signature)


@dataclass(frozen=True)
class Problem:
    seq: int | None  # the first entry concerned, when there is one
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "message": self.message}


@dataclass
class VerifyReport:
    scope: str
    entries_checked: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    checkpoints_checked: int = 0
    last_checkpoint: SignedCheckpoint | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def broken_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    @property
    def reason(self) -> str:
        return self.sorted_problems()[0].message if self.problems else ""

    def sorted_problems(self) -> list[Problem]:
        # Lowest seq first (the earliest damage), problems without a seq (the file) last.
        return sorted(self.problems, key=lambda p: (p.seq is None, p.seq or 0))

    def text(self) -> str:
        """What the shell commands print: one line when intact; the first break and each problem otherwise."""
        if not self.ok:
            where = f"at #{self.broken_seq}" if self.broken_seq is not None else "(checkpoint file)"
            return "\n".join(
                [
                    f"audit log BROKEN {where}: {self.reason}",
                    *(f"  - {p.message}" for p in self.sorted_problems()[1:]),
                    f"({self.entries_checked} entries verified before the first break)",
                ]
            )
        last = self.last_checkpoint
        signed = (
            f"; {self.checkpoints_checked} signed checkpoints verified, the last #{last.seq} "
            f"signed at {canonical_time(last.signed_at)}"
            if last
            else "; no signed checkpoint yet"
        )
        return (
            f"audit chain OK: {self.entries_checked} entries verified up to #{self.last_seq} ({self.last_hash}){signed}"
        )


# -- the file outside the database -------------------------------------------------------------


def checkpoint_file() -> Path:
    return Path(settings.AUDIT_CHECKPOINT_FILE)


def checkpoint_file_append(path: Path, checkpoint: SignedCheckpoint) -> None:
    """Append one line and make it durable, or raise OSError leaving the file as it was.

    The file is only ever opened for appending. A disk that fills up part-way through the line takes
    part of it (a short write) before it refuses the rest: that part is cut off again, so that no torn
    line sits ahead of the next checkpoint's.
    """
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        try:
            rest = memoryview(checkpoint.as_line().encode())
            while rest:
                rest = rest[os.write(fd, rest) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # if even this fails, verification reports the torn line
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
    if created:  # the new directory entry must survive a crash too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def checkpoint_file_read(path: Path) -> tuple[list[SignedCheckpoint], list[Problem]]:
    """The file's checkpoints in file order, and what is wrong with its lines (if anything)."""
    if not path.exists():
        return [], []
    checkpoints: list[SignedCheckpoint] = []
    problems: list[Problem] = []
    with path.open("rb") as fh:
        raw = fh.read()
    if raw and not raw.endswith(b"\n"):
        problems.append(Problem(None, "the checkpoint file's last line is incomplete (cut or still being written)"))
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            record = json.loads(line)
            signed_at = parse_datetime(record["signed_at"])
            if signed_at is None:
                raise ValueError("signed_at")
            checkpoint = SignedCheckpoint(int(record["seq"]), str(record["hash"]), signed_at, str(record["signature"]))
        except (ValueError, KeyError, TypeError):
            problems.append(Problem(None, f"line {number} of the checkpoint file is unreadable"))
            continue
        if checkpoints and checkpoint.seq <= checkpoints[-1].seq:
            problems.append(Problem(checkpoint.seq, f"line {number} of the checkpoint file is out of order"))
        checkpoints.append(checkpoint)
    return checkpoints, problems


# -- comparing the two copies, signatures, entries ---------------------------------------------


def _lock() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHECKPOINT_LOCK_KEY])


def _snapshot(path: Path) -> tuple[list[SignedCheckpoint], list[SignedCheckpoint], list[Problem]]:
    """Both copies of the checkpoints, read together under the checkpoint lock."""
    with transaction.atomic():
        _lock()
        in_db = [SignedCheckpoint.from_model(row) for row in AuditCheckpoint.objects.order_by("seq")]
        in_file, problems = checkpoint_file_read(path)
    return in_db, in_file, problems


def compare_copies(in_db: list[SignedCheckpoint], in_file: list[SignedCheckpoint]) -> list[Problem]:
    problems: list[Problem] = []
    db_by_seq = {c.seq: c for c in in_db}
    file_by_seq: dict[int, SignedCheckpoint] = {}
    for c in in_file:
        file_by_seq.setdefault(c.seq, c)
    for seq in sorted(db_by_seq.keys() | file_by_seq.keys()):
        db, fl = db_by_seq.get(seq), file_by_seq.get(seq)
        if db is None:
            problems.append(
                Problem(
                    seq,
                    f"the database lacks signed checkpoint #{seq} that the checkpoint file "
                    "holds: the database was rolled back or the checkpoint deleted",
                )
            )
        elif fl is None:
            problems.append(
                Problem(
                    seq,
                    f"the checkpoint file lacks signed checkpoint #{seq}: the file was truncated, edited or replaced",
                )
            )
        elif db.key() != fl.key():
            problems.append(Problem(seq, f"checkpoint #{seq} differs between the database and the checkpoint file"))
    return problems


def check_signatures(process_vault: vault.ProcessVault, checkpoints: Iterable[SignedCheckpoint]) -> list[Problem]:
    unique = sorted(set(checkpoints), key=lambda c: c.key())
    valid = process_vault.transit_verify_many(vault.AUDIT_CHECKPOINT_KEY, [(c.message(), c.signature) for c in unique])
    return [
        Problem(c.seq, f"checkpoint #{c.seq} has an invalid signature (forged or altered)")
        for c, ok in zip(unique, valid, strict=True)
        if not ok
    ]


def check_entries(checkpoints: Iterable[SignedCheckpoint]) -> list[Problem]:
    """Each checkpoint's entry must still exist with the hash that was signed."""
    signed: dict[int, set[str]] = {}
    for c in checkpoints:
        signed.setdefault(c.seq, set()).add(c.entry_hash)
    if not signed:
        return []
    head = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    stored: dict[int, str] = {}
    seqs = sorted(signed)
    for start in range(0, len(seqs), 5000):
        stored.update(AuditEntry.objects.filter(seq__in=seqs[start : start + 5000]).values_list("seq", "hash"))
    problems: list[Problem] = []
    beyond = [s for s in seqs if s > head]
    if beyond:
        problems.append(
            Problem(
                head + 1,
                f"the log ends at #{head} but entry #{max(beyond)} was signed in a "
                "checkpoint: its tail was deleted or the database rolled back",
            )
        )
    for seq in seqs:
        if seq > head:
            continue
        if seq not in stored:
            problems.append(Problem(seq, f"entry #{seq}, signed in a checkpoint, is missing"))
        elif {stored[seq]} != signed[seq]:
            problems.append(Problem(seq, f"entry #{seq} no longer has the hash its signed checkpoint holds"))
    return problems


# -- verification --------------------------------------------------------------------------------


def _verify(*, full: bool, process_vault: vault.ProcessVault, path: Path, locked: bool) -> VerifyReport:
    report = VerifyReport(scope=AuditVerification.Scope.FULL if full else AuditVerification.Scope.CHECKPOINT)
    if locked:  # the caller holds the checkpoint lock in its transaction
        in_db = [SignedCheckpoint.from_model(row) for row in AuditCheckpoint.objects.order_by("seq")]
        in_file, file_problems = checkpoint_file_read(path)
    else:
        in_db, in_file, file_problems = _snapshot(path)
    report.problems += file_problems
    report.problems += compare_copies(in_db, in_file)
    everything = [*in_db, *in_file]
    last = max(everything, key=lambda c: c.seq) if everything else None
    # A full run checks every checkpoint; before signing a new one, the last one (the anchor of
    # the chain walk below) is enough: older entries are covered by the full runs.
    to_check = everything if full else [c for c in everything if last is not None and c.seq == last.seq]
    report.problems += check_signatures(process_vault, to_check)
    report.problems += check_entries(to_check)
    report.checkpoints_checked = len({c.key() for c in to_check})
    report.last_checkpoint = last
    after_seq, after_hash = (0, GENESIS_HASH) if full or last is None else (last.seq, last.entry_hash)
    if not full and any(p.seq is not None and p.seq <= after_seq for p in report.problems):
        after_seq, after_hash = 0, GENESIS_HASH  # the anchor itself is in doubt: walk everything
    chain = audit_verify_chain(after_seq=after_seq, after_hash=after_hash)
    report.entries_checked, report.last_seq, report.last_hash = chain.checked, chain.last_seq, chain.last_hash
    if not chain.ok:
        report.problems.append(Problem(chain.broken_seq, f"entry #{chain.broken_seq}: {chain.reason}"))
    report.problems = report.sorted_problems()[:MAX_PROBLEMS]
    return report


def _store(report: VerifyReport, *, started: datetime, source: str) -> AuditVerification:
    return AuditVerification.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        scope=report.scope,
        status=AuditVerification.Status.OK if report.ok else AuditVerification.Status.BROKEN,
        source=source,
        entries_checked=report.entries_checked,
        last_seq=report.last_seq,
        checkpoints_checked=report.checkpoints_checked,
        last_checkpoint_seq=report.last_checkpoint.seq if report.last_checkpoint else None,
        broken_seq=report.broken_seq,
        problems=[p.as_dict() for p in report.problems],
    )


def _store_error(*, scope: str, started: datetime, source: str, error: Exception) -> AuditVerification:
    return AuditVerification.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        scope=scope,
        status=AuditVerification.Status.ERROR,
        source=source,
        problems=[{"seq": None, "message": str(error)}],
    )


class CheckpointFileError(Exception):
    """The checkpoint file could not be read or appended to (disk full, read-only, gone): nothing was signed."""


def _file_failed(*, path: Path, started: datetime, source: str, error: OSError) -> CheckpointFileError:
    """Record a checkpoint the file could not take, and announce it (the alerts app raises the alert) unless the
    previous attempt failed the same way: until a checkpoint succeeds, the log's newest entries are unanchored."""
    why = error.strerror or str(error)
    failure = CheckpointFileError(
        f"no checkpoint signed: the checkpoint file {path} could not be written ({why}); "
        "the next checkpoint that succeeds covers every entry since the last one"
    )
    previous = (
        AuditVerification.objects.filter(scope=AuditVerification.Scope.CHECKPOINT)
        .order_by("-finished_at", "-pk")
        .first()
    )
    stored = _store_error(scope=AuditVerification.Scope.CHECKPOINT, started=started, source=source, error=failure)
    logger.error("audit: %s", failure)
    if previous is None or previous.status != AuditVerification.Status.ERROR or previous.reason != stored.reason:
        checkpoint_failed.send(
            sender=AuditVerification,
            verification=stored,
            message=f"Audit checkpoint not signed: the checkpoint file could not be written ({why}).",
            data={"file": str(path), "errno": error.errno, "verification": stored.pk},
        )
    return failure


def _alert_if_new(report: VerifyReport, stored: AuditVerification) -> None:
    """Announce the tampering (the alerts app raises the alert), once per distinct break (a broken log stays
    broken every run)."""
    previous = (
        AuditVerification.objects.exclude(pk=stored.pk)
        .exclude(status=AuditVerification.Status.ERROR)
        .order_by("-finished_at", "-pk")
        .first()
    )
    if (
        previous is not None
        and previous.status == AuditVerification.Status.BROKEN
        and (previous.broken_seq, previous.reason) == (stored.broken_seq, stored.reason)
    ):
        return
    where = f"at #{report.broken_seq}" if report.broken_seq is not None else "in its checkpoint file"
    tampering_found.send(
        sender=AuditVerification,
        verification=stored,
        message=f"The audit log has been tampered with {where}: {report.reason}",
        data={
            "broken_seq": report.broken_seq,
            "problems": [p.as_dict() for p in report.problems[:10]],
            "verification": stored.pk,
        },
    )


def _finish(report: VerifyReport, *, started: datetime, source: str) -> VerifyReport:
    stored = _store(report, started=started, source=source)
    if report.ok:
        logger.info("audit log verified (%s) up to #%s", report.scope, report.last_seq)
    else:
        logger.error("audit log BROKEN at #%s: %s", report.broken_seq, report.reason)
        _alert_if_new(report, stored)
    return report


def audit_verify(*, source: str, process_vault: vault.ProcessVault | None = None) -> VerifyReport:
    """Verify the whole log: chain, every checkpoint's signature, both copies, entries vs checkpoints.

    Stores the outcome (the audit page shows it) and raises a critical `audit_tampered` alert
    when something is wrong. Raises VaultError when the signatures cannot be checked.
    """
    started = timezone.now()
    try:
        pv = process_vault or vault.from_settings()
        report = _verify(full=True, process_vault=pv, path=checkpoint_file(), locked=False)
    except vault.VaultError as exc:
        _store_error(scope=AuditVerification.Scope.FULL, started=started, source=source, error=exc)
        raise
    return _finish(report, started=started, source=source)


@dataclass(frozen=True)
class CheckpointResult:
    report: VerifyReport
    checkpoint: SignedCheckpoint | None  # the new one; None when refused or when nothing was new
    created: bool


def audit_checkpoint_create(*, source: str, process_vault: vault.ProcessVault | None = None) -> CheckpointResult:
    """Sign the last entry, after checking everything since the last checkpoint.

    Refuses (and alerts) when that check fails: a checkpoint over a tampered log would vouch
    for it. Does nothing when no entry was added since the last checkpoint. Raises
    CheckpointFileError (recorded and alerted) when the file cannot take it: nothing is committed then.
    """
    started = timezone.now()
    path = checkpoint_file()
    created: SignedCheckpoint | None = None
    try:
        pv = process_vault or vault.from_settings()
        with transaction.atomic():
            _lock()
            report = _verify(full=False, process_vault=pv, path=path, locked=True)
            last = report.last_checkpoint
            if report.ok and report.last_seq > 0 and (last is None or report.last_seq > last.seq):
                signed_at = timezone.now()
                message = checkpoint_message(seq=report.last_seq, entry_hash=report.last_hash, signed_at=signed_at)
                signature = pv.transit_sign(vault.AUDIT_CHECKPOINT_KEY, message)
                created = SignedCheckpoint(report.last_seq, report.last_hash, signed_at, signature)
                AuditCheckpoint.objects.create(
                    seq=created.seq, entry_hash=created.entry_hash, signed_at=signed_at, signature=signature
                )
                # Inside the transaction: if the append fails nothing is committed; if the commit
                # fails after it, the file holds one checkpoint the database lacks, which the
                # next verification reports rather than hides.
                checkpoint_file_append(path, created)
                report.last_checkpoint = created
    except vault.VaultError as exc:
        _store_error(scope=AuditVerification.Scope.CHECKPOINT, started=started, source=source, error=exc)
        raise
    except OSError as exc:  # the file: full disk, read-only, gone (the transaction above rolled back)
        raise _file_failed(path=path, started=started, source=source, error=exc) from exc
    _finish(report, started=started, source=source)
    return CheckpointResult(report=report, checkpoint=created, created=created is not None)
