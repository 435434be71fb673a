from django.apps import AppConfig
from django.apps import apps as installed


class SandboxConfig(AppConfig):
    """The local exchange (a management command, no models) and, where the console runs, its venue."""

    name = "apps.sandbox"
    label = "sandbox"
    verbose_name = "Sandbox exchange (dev/test only)"

    def ready(self) -> None:
        if installed.is_installed("apps.exchanges"):
            from apps.sandbox.venue import register  # late: the sandbox server alone never loads the port (ccxt)

            register()
