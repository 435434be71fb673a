"""`manage.py restore DIR --yes`: put a backup of `manage.py backup` back into the servers named by the settings.

Meant for fresh servers (a new, empty database and a new OpenBao): it refuses a database that
already holds users, audit entries, accounts or bots unless --force. In order:
  1. check every file of the backup against its SHA-256 in the manifest;
  2. pg_restore --clean into the database (one transaction: all or nothing);
  3. restore the OpenBao raft snapshot (forced: it comes from another cluster), with an operator
     token valid on the target (--vault-token-file or VAULT_OPERATOR_TOKEN: its root token);
  4. OpenBao then seals itself: it opens only with the ORIGINAL unseal key, which is not in the
     backup (--unseal-key-file, or typed when asked; else unseal it by hand and run audit_verify);
  5. put the audit checkpoint file back when there is none;
  6. verify the audit log (hash chain, signed checkpoints, checkpoint file) and print the result.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from apps.audit.checkpoints import VerifyReport, audit_verify
from apps.audit.services import record
from apps.ops import backup, backup_restore
from apps.vault import client as vault
from apps.vault import server as vault_server

CONFIRM_WORD = "restore"


class Command(BaseCommand):
    help = "Restore a backup (database, OpenBao, audit checkpoint file) into fresh servers, then verify the audit log."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("dir", type=Path, help="the backup's directory (it holds manifest.json)")
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument(
            "--force", action="store_true", help="restore even though the database already holds data (it is replaced)"
        )
        parser.add_argument(
            "--vault-token-file",
            type=Path,
            default=None,
            help="a file holding a root token of the TARGET OpenBao (default: $VAULT_OPERATOR_TOKEN)",
        )
        parser.add_argument(
            "--unseal-key-file",
            type=Path,
            default=None,
            help="a file holding the unseal key of the OpenBao the backup came from (or its init.json)",
        )
        parser.add_argument(
            "--replace-checkpoint-file",
            action="store_true",
            help="replace an existing audit checkpoint file with the backup's (the old one is kept aside)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._restore(options)
        except backup.BackupError as exc:
            raise CommandError(exc.message) from exc
        except vault.VaultForbidden as exc:
            raise CommandError("OpenBao refused: the token must be a root token of the target OpenBao") from exc
        except vault.VaultError as exc:
            raise CommandError(f"OpenBao: {exc}") from exc

    def _restore(self, options: dict[str, Any]) -> None:
        path: Path = options["dir"].resolve()
        manifest = backup_restore.backup_read(path)
        self.stdout.write(f"backup {path.name}: taken {manifest.get('created_at')}, every file matches its SHA-256")
        addr = settings.VAULT_ADDR
        token, unseal_key, keys_root_token = self._preflight(options, addr)
        self._confirm(options, addr)

        self.stdout.write("restoring the database (pg_restore, one transaction)")
        backup_restore.database_restore(path / backup.DATABASE_FILE)
        self.stdout.write(self.style.SUCCESS("database restored"))
        state, same_cluster = self._restore_vault(path, manifest, addr, token, unseal_key)
        self.stdout.write(backup_restore.checkpoint_file_restore(path, replace=options["replace_checkpoint_file"]))

        report = None
        if state == "active":
            report = self._verify(keys_root_token, token if same_cluster else None)
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"OpenBao is {state}: unseal it with the ORIGINAL unseal key (VAULT_ADDR={addr} bao operator "
                    "unseal), then run `manage.py audit_verify` with the control worker's token."
                )
            )
        self._report(path, manifest, report)

    def _preflight(self, options: dict[str, Any], addr: str) -> tuple[backup.OperatorToken, str, str]:
        """Everything that can refuse, before anything changes: a fresh database (or --force), an active
        OpenBao, a token it accepts, a readable unseal key file. Returns (token, unseal key, its root token)."""
        backup_restore.database_reachable()
        existing = backup_restore.database_data_summary()
        if existing and not options["force"]:
            rows = ", ".join(f"{n} in {table}" for table, n in existing.items())
            raise backup.BackupError(
                f"the database {connection.settings_dict['NAME']} already holds data ({rows}). A restore "
                "replaces all of it: restore into a fresh database, or pass --force if that is what you want."
            )
        if vault.health(addr) != "active":
            raise backup.BackupError(f"the OpenBao at {addr} is not active (initialized and unsealed)")
        token = backup.operator_token(options["vault_token_file"])
        vault.ProcessVault(addr, token.token).token_lookup_self()  # a bad token fails here, before any change
        unseal_key, keys_root_token = ("", "")
        if options["unseal_key_file"] is not None:
            unseal_key, keys_root_token = backup_restore.read_unseal_key(options["unseal_key_file"])
        return token, unseal_key, keys_root_token

    def _restore_vault(
        self, path: Path, manifest: dict[str, Any], addr: str, token: backup.OperatorToken, unseal_key: str
    ) -> tuple[str, bool]:
        """The raft snapshot restored and, if it sealed OpenBao, unsealed; returns (OpenBao's state, whether
        the snapshot was of this same cluster)."""
        same_cluster = vault_server.server_info(addr)["cluster_id"] == (manifest.get("openbao") or {}).get("cluster_id")
        self.stdout.write("restoring the OpenBao raft snapshot")
        vault_server.raft_snapshot_restore(addr, token.token, path / backup.VAULT_FILE, force=True)
        state = backup_restore.vault_wait(addr, sealed_expected=not same_cluster)
        if state == "sealed":
            state = self._unseal(addr, unseal_key)
        if state == "active":
            self.stdout.write(self.style.SUCCESS("OpenBao restored and unsealed"))
            if token.source == str(backup.local_keys_file()) and not same_cluster:
                self.stdout.write(
                    self.style.WARNING(
                        f"{token.source} now holds keys that no longer open this OpenBao: put the original "
                        "init.json of the backed-up OpenBao in its place before the next `make run`."
                    )
                )
        return state, same_cluster

    def _report(self, path: Path, manifest: dict[str, Any], report: VerifyReport | None) -> None:
        """The restore audited with the verification's outcome, and the outcome told (a broken log fails)."""
        outcome = "not verified" if report is None else ("ok" if report.ok else "broken")
        record(
            actor="system:manage.py restore",
            action="backup.restore",
            data={"backup": path.name, "taken_at": manifest.get("created_at"), "audit_log": outcome},
        )
        if report is None:
            self.stdout.write(self.style.WARNING("The audit log was NOT verified."))
        elif not report.ok:
            raise CommandError(report.text())
        else:
            self.stdout.write(self.style.SUCCESS(report.text()))
        self.stdout.write(
            "Next: restart the console's processes (their Vault tokens are those of the snapshot now); "
            "in production run `manage.py db_grant_runtime <runtime role>` again."
        )

    def _confirm(self, options: dict[str, Any], addr: str) -> None:
        if options["yes"]:
            return
        if not sys.stdin.isatty():
            raise backup.BackupError("pass --yes to confirm the restore (no terminal to ask on)")
        answer = input(
            f"This replaces the database {connection.settings_dict['NAME']} and everything in the OpenBao at "
            f"{addr}. Type '{CONFIRM_WORD}' to go on: "
        )
        if answer.strip() != CONFIRM_WORD:
            raise backup.BackupError("not confirmed; nothing was changed")

    def _unseal(self, addr: str, unseal_key: str) -> str:
        self.stdout.write(
            "OpenBao sealed itself after the restore: the restored storage opens only with the unseal key of "
            "the OpenBao the backup was taken from (it is not in the backup)."
        )
        if not unseal_key and sys.stdin.isatty():
            unseal_key = getpass.getpass("Original unseal key (not shown; empty to unseal later yourself): ").strip()
        if not unseal_key:
            return "sealed"
        if not backup_restore.vault_unseal(addr, unseal_key):
            self.stdout.write(self.style.ERROR("that key did not unseal OpenBao: is it the original one?"))
            return vault.health(addr)
        return "active"

    def _verify(self, keys_root_token: str, operator: backup.OperatorToken | None) -> VerifyReport | None:
        # The control worker's credentials when this process has them; else a root token that the
        # restored OpenBao knows (the original one, from the unseal key file).
        if settings.VAULT_TOKEN or (settings.VAULT_ROLE_ID and settings.VAULT_SECRET_ID):
            pv = vault.from_settings()
        elif keys_root_token or operator is not None:
            pv = vault.ProcessVault(settings.VAULT_ADDR, keys_root_token or (operator.token if operator else ""))
        else:
            self.stdout.write("no Vault token to check the checkpoint signatures with (see --unseal-key-file)")
            return None
        backup_restore.vault_usable(pv)
        return audit_verify(source="system:manage.py restore", process_vault=pv)
