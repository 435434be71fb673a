"""`manage.py db_grant_runtime ROLE`: give the runtime database role its privileges, after every migrate.

Runs deploy/postgres/grant-runtime.sql as the role that ran migrate (the tables' owner): the
runtime role may read and write ordinary tables but only SELECT and INSERT the audit tables, and
owns nothing, so it can neither ALTER a table nor turn the audit triggers off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections, transaction

from apps.audit.services import record

GRANT_SQL = Path(settings.BASE_DIR) / "deploy" / "postgres" / "grant-runtime.sql"

SUMMARY = """
SELECT c.relname,
       c.relkind,
       has_table_privilege(%(role)s, c.oid, 'UPDATE') OR has_table_privilege(%(role)s, c.oid, 'DELETE') AS writes,
       has_table_privilege(%(role)s, c.oid, 'INSERT') AS inserts
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm')
"""


class Command(BaseCommand):
    help = (
        "Grant the runtime database role read-write on ordinary tables and only SELECT, INSERT on the "
        "audit tables (deploy/postgres/grant-runtime.sql). Run after every migrate, as the tables' owner."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", help="the runtime role that web, the workers, beat and the fleet connect as")
        parser.add_argument("--database", default="default", help="the database alias (default: default)")

    def handle(self, *args: Any, **options: Any) -> None:
        role: str = options["role"]
        connection = connections[options["database"]]
        try:
            with transaction.atomic(using=options["database"]), connection.cursor() as cursor:
                # A transaction-local setting: the grant script reads the role's name from it.
                cursor.execute("SELECT set_config('botconsole.runtime_role', %s, true)", [role])
                cursor.execute(GRANT_SQL.read_text())
                cursor.execute(SUMMARY, {"role": role})
                rows = cursor.fetchall()
                append_only = sorted(name for name, _, writes, inserts in rows if inserts and not writes)
                read_write = sorted(name for name, _, writes, _ in rows if writes)
                record(
                    actor="system:deploy",
                    action="database.runtime_grants",
                    data={"role": role, "append_only": append_only, "read_write_tables": len(read_write)},
                )
        except DatabaseError as exc:
            raise CommandError(str(exc).strip()) from exc
        self.stdout.write(
            f"{role}: read-write on {len(read_write)} tables; append-only (SELECT, INSERT) on {', '.join(append_only)}"
        )
