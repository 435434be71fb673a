"""The Django admin as a read-only window on the data, behind an OTP-verified staff session.

Every change goes through the console's own pages, where roles, step-up with a fresh code and the
audit's before/after apply (security invariant 8). The admin would bypass all three: a superuser
could make anyone a superuser, delete an authenticator or clear a lockout with no fresh code. So
every model registered here, by any app, gets a ModelAdmin that may view and nothing else: no add,
change or delete, no actions, no custom views (UserAdmin's password form, django-otp's QR code).
The site's own login, logout and password change are the console's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.db.models import Model
from django.db.models.base import ModelBase
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, reverse
from django_otp.admin import OTPAdminSite

from apps.accounts.views import logout_view


class _NoChanges:
    """Permissions of a view-only admin; for a ModelAdmin and an inline alike."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReadOnlyModelAdmin(_NoChanges):
    """Mixed in front of a registered ModelAdmin class (see read_only)."""

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        # A custom action need not declare the permission it needs: none may run.
        return {}

    def get_inlines(self, request: HttpRequest, obj: Model | None) -> list[type[InlineModelAdmin[Any, Any]]]:
        inlines = super().get_inlines(request, obj)  # type: ignore[misc]
        return [_read_only_inline(inline) for inline in inlines]

    def get_urls(self) -> list[URLPattern]:
        # Only the standard views (list, history, view; add/change/delete refuse): an app's extra
        # views are for changing things, or, like django-otp's, show what must not be shown.
        urls: list[URLPattern] = admin.ModelAdmin.get_urls(self)  # type: ignore[arg-type]
        return urls


def _read_only_inline(inline: type[InlineModelAdmin[Any, Any]]) -> type[InlineModelAdmin[Any, Any]]:
    if issubclass(inline, _NoChanges):
        return inline
    return type(f"ReadOnly{inline.__name__}", (_NoChanges, inline), {"__module__": inline.__module__})


def read_only(admin_class: type[admin.ModelAdmin[Any]]) -> type[admin.ModelAdmin[Any]]:
    if issubclass(admin_class, ReadOnlyModelAdmin):
        return admin_class
    name = f"ReadOnly{admin_class.__name__}"
    return type(name, (ReadOnlyModelAdmin, admin_class), {"__module__": admin_class.__module__})


class ReadOnlyAdminSite(OTPAdminSite):  # type: ignore[misc]
    """django-otp's admin site (OTP-verified staff only), read-only for every model."""

    site_header = "botconsole admin (read-only)"
    site_title = "botconsole admin"
    index_title = "Read-only view of the data; every change is made on the console's own pages"

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)

    def register(
        self,
        model_or_iterable: ModelBase | Iterable[ModelBase],
        admin_class: type[admin.ModelAdmin[Any]] | None = None,
        **options: Any,
    ) -> None:
        super().register(model_or_iterable, read_only(admin_class or admin.ModelAdmin), **options)

    def enforce_read_only(self) -> None:
        """Replace any entry that reached the registry without register() (there should be none)."""
        for model, model_admin in list(self._registry.items()):
            if not isinstance(model_admin, ReadOnlyModelAdmin):
                self._registry[model] = read_only(type(model_admin))(model, self)

    # -- the site's own views: the console's ----------------------------------------------------

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # One login, with the console's lockout, session tracking and new-address mail.
        return HttpResponseRedirect(f"{reverse(settings.LOGIN_URL)}?{urlencode({'next': reverse('admin:index')})}")

    def logout(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return logout_view(request)  # the tracked session ends with an audit entry

    def password_change(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return HttpResponseRedirect(reverse("accounts:password_change"))

    def password_change_done(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return HttpResponseRedirect(reverse("accounts:password_change"))
