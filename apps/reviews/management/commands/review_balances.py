"""`manage.py review_balances`: take every exchange account's balance snapshot now, from a shell.

Needs the control worker's Vault credentials in the environment (the web token may not read keys).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.reviews.models import BalanceSnapshot
from apps.reviews.services import balance_snapshots_take


class Command(BaseCommand):
    help = "Read every exchange account's balances now and store them for the reviews (control-worker Vault token)."

    def handle(self, *args: Any, **options: Any) -> None:
        snapshots = balance_snapshots_take(source=BalanceSnapshot.Source.SHELL, actor="system:shell")
        for s in snapshots:
            if s.ok:
                self.stdout.write(
                    f"{s.account_label}: {', '.join(f'{a} {v}' for a, v in s.balances.items()) or 'empty'}"
                )
            else:
                self.stderr.write(f"{s.account_label}: failed: {s.error}")
        self.stdout.write(f"{sum(s.ok for s in snapshots)} of {len(snapshots)} account(s) read.")
