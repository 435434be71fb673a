"""Create the three roles as groups holding their permissions."""

from typing import Any

from django.db import migrations

ROLE_PERMISSIONS = {
    "viewer": ["view_console"],
    "operator": ["view_console", "operate_bots", "trigger_killswitch"],
    "admin": [
        "view_console",
        "operate_bots",
        "trigger_killswitch",
        "manage_users",
        "manage_exchange_accounts",
        "enable_live_mode",
        "resume_after_kill",
    ],
}


def create_roles(apps: Any, schema_editor: Any) -> None:
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after migrations; create them now so groups can hold them.
    config = apps.get_app_config("accounts")
    config.models_module = True
    create_permissions(config, apps=apps, verbosity=0)
    config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set(Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames))


def remove_roles(apps: Any, schema_editor: Any) -> None:
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_devices_and_sessions"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create_roles, remove_roles)]
