from __future__ import annotations

import secrets

from django.db import transaction

from apps.accounts.models import User
from apps.audit.services import record

FIRST_ADMIN_USERNAME = "admin"


def user_create_first_admin() -> tuple[User, str] | None:
    """Create the first admin with a random password, if there is no user yet.

    Returns the user and the password (to be shown once), or None when users exist.
    """
    with transaction.atomic():
        if User.objects.exists():
            return None
        password = secrets.token_urlsafe(18)
        user = User.objects.create_superuser(username=FIRST_ADMIN_USERNAME, email="", password=password)
        record(
            actor="system:first-run", action="user.create_first_admin", target=user, data={"username": user.username}
        )
    return user, password
