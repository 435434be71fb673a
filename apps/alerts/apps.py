from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Alerts: stored, audited, mailed to the admins and posted to the signed webhook; everyone calls alert_raise."""

    name = "apps.alerts"
    label = "alerts"

    def ready(self) -> None:
        from apps.alerts import receivers  # noqa: F401  # late: connects signal receivers once apps are loaded
