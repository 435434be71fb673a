from __future__ import annotations

from typing import Any

from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import BackupCodeDevice, SealedTOTPDevice, User, UserSession
from apps.accounts.services import ROLE_PERMISSIONS, user_role


def acting_user(request: HttpRequest) -> User:
    """The signed-in user a view acts for (RequireVerifiedMiddleware and the permission checks let only one in)."""
    user = request.user
    assert isinstance(user, User)
    return user


def active_sessions(user: User) -> QuerySet[UserSession]:
    return UserSession.objects.filter(user=user, ended_at__isnull=True).order_by("-last_seen")


def backup_codes_remaining(user: User) -> int:
    device = BackupCodeDevice.objects.filter(user=user).first()
    return device.remaining() if device else 0


def locked_usernames() -> set[str]:
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    return set(
        AccessAttempt.objects.filter(
            failures_since_start__gte=settings.AXES_FAILURE_LIMIT, attempt_time__gte=since
        ).values_list("username", flat=True)
    )


def users_overview() -> list[dict[str, Any]]:
    locked = locked_usernames()
    users = (
        User.objects.order_by("username")
        .prefetch_related("groups")
        .annotate(open_sessions=Count("console_sessions", filter=Q(console_sessions__ended_at__isnull=True)))
    )
    return [
        {"user": u, "role": user_role(u), "locked": u.username in locked, "open_sessions": u.open_sessions}
        for u in users
    ]


def user_detail(user: User) -> dict[str, Any]:
    return {
        "target": user,
        "role": user_role(user),
        "locked": user.username in locked_usernames(),
        "has_authenticator": SealedTOTPDevice.objects.filter(user=user, confirmed=True).exists(),
        "backup_codes_remaining": backup_codes_remaining(user),
        "sessions": active_sessions(user),
    }


def role_capabilities() -> list[tuple[str, list[str]]]:
    """What each role may do, in the words of its permissions, for the Users page."""
    described = dict(User._meta.permissions)
    return [(role, [described[c] for c in codenames]) for role, codenames in ROLE_PERMISSIONS.items()]
