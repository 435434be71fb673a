"""The AppConfig that stands for django.contrib.admin in INSTALLED_APPS (a module of its own: Django
picks an app's config from its apps.py, which must hold only AccountsConfig)."""

from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import ImproperlyConfigured


class ReadOnlyAdminConfig(AdminConfig):
    """django.contrib.admin with the read-only, OTP-only site (apps.accounts.admin_site) as admin.site."""

    default_site = "apps.accounts.admin_site.ReadOnlyAdminSite"

    def ready(self) -> None:
        super().ready()  # autodiscover: every app's admin module registers through the read-only site
        from apps.accounts.admin_site import ReadOnlyAdminSite  # late: this module loads before the models

        site = self.module.site  # type: ignore[union-attr]
        if not isinstance(site, ReadOnlyAdminSite):
            raise ImproperlyConfigured("admin.site must be the read-only ReadOnlyAdminSite")
        site.enforce_read_only()
