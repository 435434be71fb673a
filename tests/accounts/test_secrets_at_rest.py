from __future__ import annotations

import base64
from collections.abc import Callable

import pytest

from apps.accounts.models import BackupCodeDevice
from apps.accounts.services import user_create_first_admin
from apps.audit.models import AuditEntry
from tests.leaks import pg_dump
from tests.people import Person


@pytest.mark.django_db(transaction=True)
def test_totp_seeds_and_backup_codes_are_absent_from_a_database_dump(person: Callable[..., Person]) -> None:
    alice = person("alice")
    assert alice.seed is not None
    codes = BackupCodeDevice.objects.create(user=alice.user, name="Backup codes").replace_codes(10)
    dump = pg_dump()
    assert "alice" in dump  # the dump really holds this test's data
    for form in (
        alice.seed.hex(),
        base64.b32encode(alice.seed).decode().rstrip("="),
        base64.b64encode(alice.seed).decode(),
    ):
        assert form.lower() not in dump.lower()
    for code in codes:
        assert code not in dump and code.replace("-", "") not in dump


@pytest.mark.django_db
def test_the_first_admin_is_created_once_with_the_admin_role() -> None:
    created = user_create_first_admin()
    assert created is not None
    user, password = created
    assert user.check_password(password) and list(user.groups.values_list("name", flat=True)) == ["admin"]
    assert user_create_first_admin() is None
    assert AuditEntry.objects.filter(action="user.created", data__first_admin=True).count() == 1
