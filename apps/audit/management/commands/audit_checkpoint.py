from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.audit.checkpoints import CheckpointFileError, audit_checkpoint_create, checkpoint_file
from apps.vault.client import VaultError


class Command(BaseCommand):
    help = (
        "Sign a checkpoint of the last audit entry now (after checking the log since the last one) and "
        "append it to the checkpoint file. Needs the control worker's Vault token (VAULT_TOKEN)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = audit_checkpoint_create(source="system:manage.py audit_checkpoint")
        except VaultError as exc:
            raise CommandError(f"no checkpoint signed: {exc}") from exc
        except CheckpointFileError as exc:
            raise CommandError(str(exc)) from exc
        report = result.report
        if not report.ok:
            raise CommandError(
                f"no checkpoint signed: the audit log is BROKEN at #{report.broken_seq}: {report.reason}"
            )
        if result.checkpoint is not None:
            self.stdout.write(f"checkpoint #{result.checkpoint.seq} signed and appended to {checkpoint_file()}")
        elif report.last_checkpoint is not None:
            self.stdout.write(f"nothing new since checkpoint #{report.last_checkpoint.seq}")
        else:
            self.stdout.write("the audit log is empty: nothing to sign")
