"""The Django admin is read-only for every registered model (apps.accounts.admin_site): every change
goes through the console's pages, with roles, step-up and the audit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.db.models import Model
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.accounts.admin_site import ReadOnlyAdminSite, ReadOnlyModelAdmin
from apps.accounts.models import SealedTOTPDevice, User
from apps.audit.models import AuditEntry
from tests.people import PASSWORD, Person

pytestmark = pytest.mark.django_db

Login = Callable[[str], tuple[Client, Person]]


def superuser(logged_in: Login) -> tuple[Client, Person]:
    """The strongest admin there is: superuser and staff, with an OTP-verified session."""
    client, who = logged_in("admin")
    who.user.is_staff = who.user.is_superuser = True
    who.user.save()
    return client, who


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every model the admin shows."""
    return {model._meta.label: list(model._default_manager.order_by("pk").values()) for model in admin.site._registry}


def url(model: type[Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_registered_model_has_a_read_only_admin() -> None:
    assert isinstance(admin.site, ReadOnlyAdminSite)
    registered = {model._meta.label for model in admin.site._registry}
    # Users, groups, OTP devices and the lockout records at least; whatever any app adds, too.
    assert {"accounts.User", "auth.Group", "otp_totp.TOTPDevice", "axes.AccessAttempt"} <= registered
    for model, model_admin in admin.site._registry.items():
        assert isinstance(model_admin, ReadOnlyModelAdmin), model


def test_the_admin_changes_nothing_whatever_a_verified_superuser_posts(
    logged_in: Login, person: Callable[..., Person]
) -> None:
    client, me = superuser(logged_in)
    victim = person("victim", "viewer")
    group = Group.objects.create(name="extra")
    device = SealedTOTPDevice.objects.get(user=victim.user)
    attempt = AccessAttempt.objects.create(username="victim", ip_address="10.0.0.1", failures_since_start=5)
    audit_before = AuditEntry.objects.count()
    before = snapshot()
    everything = Permission.objects.values_list("pk", flat=True)
    new = "Changed-pass-123"

    posts: list[tuple[str, dict[str, Any]]] = [
        # Make someone a superuser, add a user, give a group every permission, change a password.
        (
            url(User, "change", victim.user.pk),
            {
                "username": "victim",
                "email": "v@example.test",
                "is_active": "on",
                "is_staff": "on",
                "is_superuser": "on",
                "date_joined_0": "2026-01-01",
                "date_joined_1": "00:00:00",
                "groups": [group.pk],
            },
        ),
        (
            url(User, "add"),
            {"username": "intruder", "password1": new, "password2": new, "usable_password": "true"},
        ),  # pragma: allowlist secret
        (f"/admin/accounts/user/{victim.user.pk}/password/", {"password1": new, "password2": new}),
        (url(Group, "add"), {"name": "sneaky", "permissions": list(everything)}),
        (url(Group, "change", group.pk), {"name": "extra", "permissions": list(everything)}),
        # Remove an authenticator or a lockout, delete a user, in one go or with an action.
        (url(TOTPDevice, "delete", device.pk), {"post": "yes"}),
        (url(AccessAttempt, "delete", attempt.pk), {"post": "yes"}),
        (url(User, "delete", victim.user.pk), {"post": "yes"}),
        (url(User, "changelist"), {"action": "delete_selected", "_selected_action": [victim.user.pk], "post": "yes"}),
        (
            url(AccessAttempt, "changelist"),
            {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"},
        ),
        (
            url(User, "changelist"),
            {
                "form-TOTAL_FORMS": "1",
                "form-INITIAL_FORMS": "1",
                "form-0-id": victim.user.pk,
                "form-0-is_superuser": "on",
                "_save": "Save",
            },
        ),
        # The site's own password change and login are the console's.
        ("/admin/password_change/", {"old_password": PASSWORD, "new_password1": new, "new_password2": new}),
        ("/admin/login/", {"username": "victim", "password": PASSWORD}),
    ]
    # And for every registered model, whatever it is: add, change, delete, an action on all rows.
    for model in admin.site._registry:
        rows = list(model._default_manager.values_list("pk", flat=True))
        posts.append((url(model, "add"), {}))
        posts.append((url(model, "changelist"), {"action": "delete_selected", "_selected_action": rows, "post": "yes"}))
        for pk in rows[:3]:
            posts += [(url(model, "change", pk), {}), (url(model, "delete", pk), {"post": "yes"})]

    for path, data in posts:
        response = client.post(path, data)
        assert response.status_code in (200, 302, 403, 404, 405), (path, response.status_code)
        if path in ("/admin/password_change/", "/admin/login/"):
            assert response.status_code == 302 and response["Location"].startswith("/accounts/"), path

    assert snapshot() == before
    assert not User.objects.filter(username="intruder").exists() and not Group.objects.filter(name="sneaky").exists()
    victim.user.refresh_from_db()
    assert not victim.user.is_superuser and victim.user.check_password(PASSWORD)
    me.user.refresh_from_db()
    assert me.user.check_password(PASSWORD)
    assert not LogEntry.objects.exists()
    assert AuditEntry.objects.count() == audit_before  # nothing happened, so nothing to audit
    assert client.get("/admin/").status_code == 200  # still signed in and verified


def test_a_verified_staff_user_can_still_read_every_admin_page(logged_in: Login, person: Callable[..., Person]) -> None:
    client, _ = superuser(logged_in)
    victim = person("victim", "viewer")
    assert client.get("/admin/").status_code == 200
    for model in admin.site._registry:
        page = client.get(url(model, "changelist"))
        assert page.status_code == 200, model
        assert "delete_selected" not in page.content.decode(), model  # no actions offered
    page = client.get(url(User, "change", victim.user.pk))
    assert page.status_code == 200
    body = page.content.decode()
    assert "victim" in body
    for button in ('name="_save"', 'name="_continue"', 'name="_addanother"', "deletelink"):
        assert button not in body, button
    device = SealedTOTPDevice.objects.get(user=victim.user)
    # django-otp's key and QR-code views are gone, not merely hidden.
    for extra in ("config", "qrcode"):
        response = client.get(f"/admin/otp_totp/totpdevice/{device.pk}/{extra}/", follow=True)
        # The admin's catch-all takes "<pk>/config" for an object id, finds none and goes back to the index.
        assert response.resolver_match.url_name == "index" and b"otpauth" not in response.content, extra
    device_page = client.get(url(TOTPDevice, "change", device.pk)).content.decode()
    assert "qrcode" not in device_page and "otpauth" not in device_page
