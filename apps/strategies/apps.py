from django.apps import AppConfig


class StrategiesConfig(AppConfig):
    """Pure `decide()` functions with typed parameter schemas: no database, no exchange, no clock."""

    name = "apps.strategies"
    label = "strategies"
