"""Security notices by email: a login from a new IP, and a lockout."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail

from apps.accounts.models import User

logger = logging.getLogger(__name__)


def admin_emails() -> list[str]:
    return list(
        User.objects.filter(is_active=True, groups__name="admin").exclude(email="").values_list("email", flat=True)
    )


def _send(subject: str, body: str, recipients: list[str]) -> None:
    recipients = sorted(set(recipients))
    if not recipients:
        logger.info("security notice not mailed (no address on file): %s", subject)
        return
    send_mail(f"[botconsole] {subject}", body, settings.DEFAULT_FROM_EMAIL, recipients)


def new_ip_login(*, user: User, ip: str, user_agent: str) -> None:
    _send(
        "New sign-in from an unfamiliar address",
        f"Your botconsole account {user.get_username()} signed in from {ip}, an address it has not used "
        f"before.\nBrowser: {user_agent or 'unknown'}\n\nIf this was not you, tell an admin now: they can "
        "end the session, reset your two-factor device and lock the account.",
        [user.email] if user.email else [],
    )


def lockout(*, username: str, ip: str | None) -> None:
    user = User.objects.filter(username=username).first()
    recipients = admin_emails() + ([user.email] if user is not None and user.email else [])
    _send(
        "Account locked after repeated failed sign-ins",
        f"The account {username!r} was locked after {settings.AXES_FAILURE_LIMIT} failed sign-in attempts "
        f"from {ip or 'an unknown address'}.\nIt unlocks by itself after {settings.AXES_COOLOFF_TIME}; an admin "
        "can unlock it sooner on the Users page.",
        recipients,
    )
