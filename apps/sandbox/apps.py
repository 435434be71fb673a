from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """A plain app: a management command and no models, so it never touches the database."""

    name = "apps.sandbox"
    label = "sandbox"
    verbose_name = "Sandbox exchange (dev/test only)"
