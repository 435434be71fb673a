from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.audit.services import audit_verify_chain


class Command(BaseCommand):
    help = "Walk the audit hash chain from #1 and report the first broken sequence number."

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify_chain()
        if not report.ok:
            raise CommandError(
                f"audit chain BROKEN at #{report.broken_seq}: {report.reason} "
                f"({report.checked} entries verified before it)"
            )
        self.stdout.write(
            f"audit chain OK: {report.checked} entries verified up to #{report.last_seq} ({report.last_hash})"
        )
