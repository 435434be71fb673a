"""Audit failed logins and lockouts as django-auth and django-axes report them."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest

from apps.accounts import notifications
from apps.accounts.models import User
from apps.audit.services import record
from apps.core.net import client_ip


@receiver(user_login_failed)
def audit_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username = str(credentials.get("username", ""))[:150]
    if credentials.get("stage") == "otp":
        user = User.objects.filter(username=username).first()
        actor: User | str = user if user is not None else "system:auth"
        record(actor=actor, action="login.otp_failed", target=user, request=request, data={"username": username})
    else:
        # The same entry for an unknown user and a wrong password: the page says the same too.
        record(actor="system:auth", action="login.failed", request=request, data={"username": username})


@receiver(user_locked_out)
def audit_lockout(
    sender: Any, request: HttpRequest, username: str | None, ip_address: str | None, **kwargs: Any
) -> None:
    # The address the audit entry records (apps.core.net), whatever django-axes was configured with.
    ip = client_ip(request) if request is not None else ip_address
    record(
        actor="system:auth",
        action="login.locked_out",
        request=request,
        data={"username": username or "", "ip": ip},
    )
    notifications.lockout(username=username or "", ip=ip)


@receiver(post_save, sender=LogEntry)
def audit_admin_change(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    """Whatever is changed through the Django admin is in the audit log too."""
    if not created:
        return
    action = {ADDITION: "admin.added", CHANGE: "admin.changed", DELETION: "admin.deleted"}[instance.action_flag]
    model = instance.content_type.model_class() if instance.content_type else None
    record(
        actor=instance.user,
        action=action,
        target=(model._meta.label_lower if model else "unknown", instance.object_id or ""),
        data={"object": instance.object_repr, "change": instance.get_change_message()},
    )
