"""`manage.py backup [--dir DIR]`: the database, OpenBao and the audit checkpoint file, in one directory.

Writes DIR/<UTC time>/ (default var/backups/): see apps.ops.backup. The OpenBao snapshot needs an
operator token: --vault-token-file, or VAULT_OPERATOR_TOKEN (a token with the botconsole-backup
policy), or, for the embedded servers of `make run`, the local root token in var/openbao/init.json.
Never the token of a console process: none of them may take a snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.ops.backup import BackupError, backup_create, operator_token
from apps.vault import client as vault


class Command(BaseCommand):
    help = "Back up the database (pg_dump), OpenBao (raft snapshot) and the audit checkpoint file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dir", type=Path, default=None, help="where to create the backup's directory (default: var/backups)"
        )
        parser.add_argument(
            "--vault-token-file",
            type=Path,
            default=None,
            help="a file holding the OpenBao token for the snapshot (default: $VAULT_OPERATOR_TOKEN, "
            "else the local root token of `make run`)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        parent = options["dir"] or Path(settings.VAR_DIR) / "backups"
        try:
            token = operator_token(options["vault_token_file"])
            self.stdout.write(f"OpenBao token from {token.source}")
            result = backup_create(parent=parent.resolve(), token=token, log=lambda line: self.stdout.write(line))
        except BackupError as exc:
            raise CommandError(exc.message) from exc
        except vault.VaultForbidden as exc:
            raise CommandError(
                "OpenBao refused the snapshot: the token needs the botconsole-backup policy "
                "(deploy/openbao/policies/botconsole-backup.hcl)"
            ) from exc
        except vault.VaultError as exc:
            raise CommandError(f"the OpenBao snapshot failed: {exc}") from exc
        for name, info in result.manifest["files"].items():
            self.stdout.write(f"  {name:<26} {info['bytes']:>12} bytes  sha256 {info['sha256']}")
        self.stdout.write(
            self.style.WARNING(
                "The OpenBao snapshot is encrypted by OpenBao's barrier, but the UNSEAL KEY IS NOT IN THIS BACKUP: "
                "keep the unseal key (and, for `make run`, var/openbao/init.json) apart from the backups. "
                "Without it the snapshot cannot be restored."
            )
        )
        self.stdout.write(self.style.SUCCESS(f"backup written to {result.path}"))
