import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.core.exceptions import ApplicationError
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create

DEMO_LABEL = "Sandbox demo"


class Command(BaseCommand):
    help = (
        "First run: add the sandbox exchange's demo key as the account 'Sandbox demo'. The key comes from "
        "SANDBOX_API_KEY / SANDBOX_API_SECRET in the environment, never from the command line."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if ExchangeAccount.objects.filter(label=DEMO_LABEL).exists():
            self.stdout.write(f"{DEMO_LABEL} exists")
            return
        credentials = {
            "apiKey": os.environ.get("SANDBOX_API_KEY", ""),
            "secret": os.environ.get("SANDBOX_API_SECRET", ""),
        }
        try:
            exchange_account_create(
                label=DEMO_LABEL,
                exchange_id="sandbox",
                credentials=credentials,
                attested_no_withdrawals=False,
                actor="system:first-run",
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"{DEMO_LABEL} added")
