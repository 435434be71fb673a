"""The Users page says what each role may do, in the words of the permissions the roles really hold."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from apps.accounts.models import User
from apps.accounts.services import ROLE_PERMISSIONS
from tests.people import Person

pytestmark = pytest.mark.django_db


def test_the_users_page_lists_each_roles_permissions(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    admin, _ = logged_in("admin")
    page = admin.get("/accounts/users/").content.decode()
    assert "What each role may do" in page
    described = dict(User._meta.permissions)
    viewer_part = page[page.index("<dt>Viewer</dt>") : page.index("<dt>Operator</dt>")]
    assert described["view_console"] in viewer_part and described["operate_bots"] not in viewer_part
    admin_part = page[page.index("<dt>Admin</dt>") :]
    assert all(described[c] in admin_part for c in ROLE_PERMISSIONS["admin"])
