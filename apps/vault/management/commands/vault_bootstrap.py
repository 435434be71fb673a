import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.vault import client as vault
from apps.vault import server as vault_server


class Command(BaseCommand):
    help = (
        "Idempotently set up OpenBao/Vault for botconsole: KV v2 at kv/, the transit key "
        "audit-checkpoint, AppRole auth and the policies in deploy/openbao/policies/. "
        "Needs an admin token in VAULT_BOOTSTRAP_TOKEN (never the token of a running process)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        token = os.environ.get("VAULT_BOOTSTRAP_TOKEN", "")
        if not token:
            raise CommandError("set VAULT_BOOTSTRAP_TOKEN to a Vault admin token")
        try:
            changed = vault_server.bootstrap(settings.VAULT_ADDR, token)
        except vault.VaultError as exc:
            raise CommandError(str(exc)) from exc
        for line in changed or ["already set up; nothing changed"]:
            self.stdout.write(line)
