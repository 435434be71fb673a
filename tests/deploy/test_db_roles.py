"""The production database roles (deploy/postgres): the runtime role can append to the audit log, never change it.

Runs on the real test PostgreSQL: a throwaway runtime role is created with the cluster's superuser,
`manage.py db_grant_runtime` applies deploy/postgres/grant-runtime.sql as the tables' owner (the
test database's owner), and the default connection is then re-opened as the runtime role.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from psycopg import sql

from apps.accounts.models import User
from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify_chain, record
from apps.bots.halts import global_halt_lock_shared
from apps.core.files import pg_bin
from tests.deploy.conftest import DEPLOY, Role, pg_superuser_params

pytestmark = pytest.mark.django_db(transaction=True)

PERMISSION_DENIED = "42501"


@contextlib.contextmanager
def connected_as(role: Role) -> Iterator[None]:
    """Re-open Django's default connection as `role` for the duration (then as the owner again)."""
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(USER=role.name, PASSWORD=role.password)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone() == (role.name,)
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def refused(statement: str, params: list[Any] | None = None) -> str:
    """Run `statement` on the default connection; it must fail with a permission error, whose text is returned."""
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)
    cause = caught.value.__cause__
    assert isinstance(cause, psycopg.Error) and cause.sqlstate == PERMISSION_DENIED, caught.value
    return str(caught.value)


def audit_tables() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace "
            "AND relname LIKE 'audit\\_%' ORDER BY relname"
        )
        return [name for (name,) in cursor.fetchall()]


def first_column_of(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum = 1", [table])
        row = cursor.fetchone()
    assert row is not None
    return str(row[0])


def privileges(role: str, table: str) -> set[str]:
    kinds = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT " + ", ".join(f"has_table_privilege(%s, %s, '{kind}')" for kind in kinds),
            [value for _ in kinds for value in (role, table)],
        )
        row = cursor.fetchone()
    assert row is not None
    return {kind for kind, granted in zip(kinds, row, strict=True) if granted}


@pytest.fixture
def runtime(make_role: Callable[..., Role]) -> Role:
    role = make_role("botconsole_rt")
    call_command("db_grant_runtime", role.name, stdout=open(os.devnull, "w"))  # noqa: SIM115
    return role


def test_the_runtime_role_appends_audit_entries_but_cannot_change_or_remove_them(runtime: Role) -> None:
    record(actor="system:test", action="test.written_by_owner")
    with connected_as(runtime):
        entry = record(actor="system:test", action="test.written_by_runtime", data={"ok": True})
        assert AuditEntry.objects.filter(seq=entry.seq, action="test.written_by_runtime").exists()

        table = AuditEntry._meta.db_table
        for statement in (
            f"UPDATE {table} SET action = 'forged' WHERE seq = %s",
            f"DELETE FROM {table} WHERE seq = %s",
        ):
            # "permission denied for table", not the trigger's "append-only": refused before any trigger runs.
            assert f"permission denied for table {table}" in refused(statement, [entry.seq])
        assert f"permission denied for table {table}" in refused(f"TRUNCATE {table}")
        for statement in (
            f"ALTER TABLE {table} DISABLE TRIGGER USER",
            f"ALTER TABLE {table} DISABLE TRIGGER audit_refuse_update_delete",
            f"DROP TRIGGER audit_refuse_update_delete ON {table}",
            f"ALTER TABLE {table} OWNER TO CURRENT_USER",
        ):
            assert "must be owner of" in refused(statement)  # "of table" or "of relation"
        assert "permission denied for schema public" in refused("CREATE TABLE audit_shadow (seq bigint)")

    rows = list(AuditEntry.objects.order_by("seq").values_list("action", flat=True))
    assert rows[-2:] == ["test.written_by_owner", "test.written_by_runtime"]
    assert audit_verify_chain().ok


def test_every_audit_table_is_append_only_for_the_runtime_role(runtime: Role) -> None:
    tables = audit_tables()
    assert {"audit_auditentry", "audit_auditcheckpoint"} <= set(tables)
    for table in tables:
        assert privileges(runtime.name, table) == {"SELECT", "INSERT"}, table
    first_column = {table: first_column_of(table) for table in tables}
    with connected_as(runtime):
        for table in tables:
            column = first_column[table]
            assert "permission denied" in refused(f"UPDATE {table} SET {column} = {column}")
            assert "permission denied" in refused(f"DELETE FROM {table}")


def test_ordinary_tables_stay_writable_for_the_runtime_role(runtime: Role) -> None:
    assert privileges(runtime.name, "accounts_user") == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert privileges(runtime.name, "django_migrations") == {"SELECT"}
    with connected_as(runtime):
        user = User.objects.create_user(username="runtime-writer", password="correct horse battery staple")
        User.objects.filter(pk=user.pk).update(email="writer@example.com")
        assert User.objects.get(pk=user.pk).email == "writer@example.com"
        User.objects.filter(pk=user.pk).delete()
        assert not User.objects.filter(username="runtime-writer").exists()
        # The order gate reads the halt flag FOR SHARE, which needs UPDATE on the table.
        with transaction.atomic():
            active, _ = global_halt_lock_shared()
        assert active is False
        assert "permission denied for table django_migrations" in refused("DELETE FROM django_migrations")


def test_a_table_added_later_is_closed_until_the_grants_run_again(runtime: Role) -> None:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE audit_later (id bigint)")
        cursor.execute("CREATE TABLE deploy_later (id bigint)")
    try:
        assert privileges(runtime.name, "audit_later") == set()
        assert privileges(runtime.name, "deploy_later") == set()
        call_command("db_grant_runtime", runtime.name, stdout=open(os.devnull, "w"))  # noqa: SIM115
        assert privileges(runtime.name, "audit_later") == {"SELECT", "INSERT"}
        assert privileges(runtime.name, "deploy_later") == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE audit_later, deploy_later")


def test_the_grant_command_records_what_it_granted(runtime: Role) -> None:
    entry = AuditEntry.objects.filter(action="database.runtime_grants").order_by("-seq").first()
    assert entry is not None and entry.actor == "system:deploy"
    assert entry.data["role"] == runtime.name
    assert set(entry.data["append_only"]) == set(audit_tables())


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("owner", "owns the tables"),
        ("powerful", "too powerful"),
        ("missing", "does not exist"),
        ("member", "is a member of"),
    ],
)
def test_the_grant_command_refuses_a_role_that_could_rewrite_the_log(
    which: str, message: str, make_role: Callable[..., Role], pg_admin: Callable[[str], Any]
) -> None:
    if which == "owner":
        name = connection.settings_dict["USER"]
    elif which == "powerful":
        name = make_role("botconsole_rt", "CREATEROLE").name
    elif which == "missing":
        name = "botconsole_nobody_by_this_name"
    else:
        name = make_role("botconsole_rt").name
        pg_admin("postgres").execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(connection.settings_dict["USER"]), sql.Identifier(name))
        )
    entries = AuditEntry.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command("db_grant_runtime", name)
    assert AuditEntry.objects.count() == entries


def test_roles_sql_creates_an_owner_and_a_runtime_role_that_owns_nothing(services: Any, pg_admin: Any) -> None:
    """deploy/postgres/roles.sql with psql, twice (it is idempotent), on a database of its own."""
    suffix = os.urandom(3).hex()
    owner, runtime_name, dbname = f"bc_owner_{suffix}", f"bc_app_{suffix}", f"bc_db_{suffix}"
    params = pg_superuser_params(services)
    assert "conninfo" not in params, "roles.sql is run here with the embedded cluster's superuser"
    argv = [
        str(pg_bin("psql")),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        params["host"],
        "-p",
        str(params["port"]),
        "-U",
        params["user"],
        "-d",
        "postgres",
        "-v",
        f"owner={owner}",
        "-v",
        f"runtime={runtime_name}",
        "-v",
        f"dbname={dbname}",
        "-f",
        str(DEPLOY / "postgres" / "roles.sql"),
    ]
    env = {"PATH": os.environ["PATH"], "PGPASSWORD": params["password"]}
    admin = pg_admin("postgres")
    try:
        for _ in range(2):
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
        roles = dict(
            (row[0], row[1:])
            for row in admin.execute(
                "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolinherit, rolcanlogin "
                "FROM pg_roles WHERE rolname IN (%s, %s)",
                [owner, runtime_name],
            ).fetchall()
        )
        assert roles[owner] == (False, False, False, False, True, True)
        assert roles[runtime_name] == (False, False, False, False, False, True)
        db_owner = admin.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", [dbname]
        ).fetchone()
        assert db_owner == (owner,)
        checks = admin.execute(
            "SELECT has_database_privilege(%s, %s, 'CONNECT'), has_database_privilege(%s, %s, 'CREATE'), "
            "has_database_privilege(%s, %s, 'TEMP'), has_database_privilege('public', %s, 'CONNECT')",
            [runtime_name, dbname, runtime_name, dbname, runtime_name, dbname, dbname],
        ).fetchone()
        assert checks == (True, False, False, False)
        in_db = pg_admin(dbname)
        schema = in_db.execute(
            "SELECT has_schema_privilege(%s, 'public', 'USAGE'), has_schema_privilege(%s, 'public', 'CREATE'), "
            "has_schema_privilege(%s, 'public', 'CREATE')",
            [runtime_name, runtime_name, owner],
        ).fetchone()
        assert schema == (True, False, True)
        in_db.close()
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        for name in (runtime_name, owner):
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
