from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operating the console: health, metrics, backup and restore, database grants."""

    name = "apps.ops"
    label = "ops"
