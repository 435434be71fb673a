"""Test-only `flush`: pytest-django empties the database after each transactional test.

The audit tables refuse TRUNCATE by trigger, so this command, as the tables' owner, turns the
audit triggers off around Django's own flush and back on after. It is installed only by the
test settings; in production nothing can empty the audit log.
"""

from typing import Any

from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections

APPEND_ONLY_TABLES = ("audit_auditentry", "audit_auditcheckpoint")


class Command(FlushCommand):
    def handle(self, **options: Any) -> None:
        connection = connections[options["database"]]
        with connection.cursor() as cursor:
            for table in APPEND_ONLY_TABLES:
                cursor.execute(f"ALTER TABLE IF EXISTS {table} DISABLE TRIGGER USER")
        try:
            super().handle(**options)
        finally:
            with connection.cursor() as cursor:
                for table in APPEND_ONLY_TABLES:
                    cursor.execute(f"ALTER TABLE IF EXISTS {table} ENABLE TRIGGER USER")
