from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    label = "accounts"

    def ready(self) -> None:
        from apps.accounts import signals  # noqa: F401  # late: receivers connect once the models are loaded

        post_migrate.connect(sync_roles, sender=self)


def sync_roles(sender: AppConfig, **kwargs: Any) -> None:
    """Keep the role groups and their permissions as the code defines them.

    Migration 0003 creates them; this runs after every migrate and flush as well, so a
    database emptied by a test or a permission added later still ends up right.
    """
    from django.contrib.auth.models import Group, Permission

    from apps.accounts.services import ROLE_PERMISSIONS  # late: apps.py loads before the models

    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames))
