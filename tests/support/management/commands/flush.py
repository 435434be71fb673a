"""Test-only `flush`: pytest-django empties the database after each transactional test.

The audit table refuses TRUNCATE by trigger, so this command, as the table owner, turns the
audit triggers off around Django's own flush and back on after. It is installed only by the
test settings; in production nothing can empty the audit log.
"""

from typing import Any

from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections


class Command(FlushCommand):
    def handle(self, **options: Any) -> None:
        connection = connections[options["database"]]
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER USER")
        try:
            super().handle(**options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER USER")
