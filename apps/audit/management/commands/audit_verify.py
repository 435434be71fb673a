from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.audit.chain import canonical_time
from apps.audit.checkpoints import audit_verify
from apps.vault.client import VaultError


class Command(BaseCommand):
    help = (
        "Verify the audit log: its hash chain from #1, every signed checkpoint (signature, entry, and the "
        "checkpoint file outside the database). Needs the control worker's Vault token (VAULT_TOKEN)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = audit_verify(source="system:manage.py audit_verify")
        except VaultError as exc:
            raise CommandError(f"could not check the checkpoint signatures: {exc}") from exc
        if not report.ok:
            where = f"at #{report.broken_seq}" if report.broken_seq is not None else "(checkpoint file)"
            lines = [f"audit log BROKEN {where}: {report.reason}"]
            lines += [f"  - {p.message}" for p in report.problems[1:]]
            lines.append(f"({report.entries_checked} entries verified before the first break)")
            raise CommandError("\n".join(lines))
        last = report.last_checkpoint
        signed = (
            f"; {report.checkpoints_checked} signed checkpoints verified, the last #{last.seq} "
            f"signed at {canonical_time(last.signed_at)}"
            if last
            else "; no signed checkpoint yet"
        )
        self.stdout.write(
            f"audit chain OK: {report.entries_checked} entries verified up to #{report.last_seq} "
            f"({report.last_hash}){signed}"
        )
