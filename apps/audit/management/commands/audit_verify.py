from typing import Any

from django.core.management.base import BaseCommand, CommandError

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
            raise CommandError(report.text())
        self.stdout.write(report.text())
