"""Accounts: roles, the OTP login step, enrollment, backup codes and step-up (sessions: apps.accounts.sessions).

Every state change here writes an audit entry. OTP codes, seeds and backup codes never
reach a log, the audit data or a task argument.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.http import HttpRequest
from django_otp import login as otp_login

from apps.accounts import notifications
from apps.accounts.models import BackupCodeDevice, SealedTOTPDevice, User, UserSession
from apps.accounts.sessions import SESSION_LAST_SEEN, SESSION_LOGIN_AT, SESSION_STEP_UP_AT, now_ts, user_sessions_end
from apps.audit.services import record
from apps.core.exceptions import ApplicationError
from apps.core.net import client_ip

FIRST_ADMIN_USERNAME = "admin"
ROLES = ("viewer", "operator", "admin")
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "viewer": ("view_console",),
    "operator": ("view_console", "operate_bots", "trigger_killswitch"),
    "admin": (
        "view_console",
        "operate_bots",
        "trigger_killswitch",
        "manage_users",
        "manage_exchange_accounts",
        "enable_live_mode",
        "resume_after_kill",
    ),
}
Actor = User | str


# -- roles and users ----------------------------------------------------------------------


def _role_group(user: User) -> str | None:
    names = {g.name for g in user.groups.all()}
    return next((role for role in reversed(ROLES) if role in names), None)


def user_role(user: User) -> str | None:
    # A superuser holds every permission whatever its groups; show it as what it is.
    return _role_group(user) or ("admin" if user.is_superuser else None)


def user_set_role(*, user: User, role: str, actor: Actor, request: HttpRequest | None = None) -> None:
    if role not in ROLES:
        raise ApplicationError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")
    before = _role_group(user)
    if before == role:
        return
    with transaction.atomic():
        user.groups.remove(*Group.objects.filter(name__in=ROLES))
        user.groups.add(Group.objects.get(name=role))
        record(
            actor=actor,
            action="user.role_changed",
            target=user,
            request=request,
            data={"username": user.username, "before": before, "after": role},
        )


def user_create(*, username: str, email: str, role: str, actor: Actor, request: HttpRequest | None = None) -> str:
    """Create a user with a random one-time password (returned, to hand over once)."""
    if User.objects.filter(username__iexact=username).exists():
        raise ApplicationError("A user with that username already exists.")
    if role not in ROLES:
        raise ApplicationError(f"Unknown role {role!r}.")
    password = secrets.token_urlsafe(15)
    with transaction.atomic():
        user = User.objects.create_user(username=username, email=email, password=password)
        record(
            actor=actor,
            action="user.created",
            target=user,
            request=request,
            data={"username": username, "email": email},
        )
        user_set_role(user=user, role=role, actor=actor, request=request)
    return password


def user_create_first_admin() -> tuple[User, str] | None:
    """Create the first admin with a random password, if there is no user yet.

    Returns the user and the password (to be shown once), or None when users exist.
    """
    with transaction.atomic():
        if User.objects.exists():
            return None
        password = secrets.token_urlsafe(18)
        user = User.objects.create_superuser(username=FIRST_ADMIN_USERNAME, email="", password=password)
        record(
            actor="system:first-run",
            action="user.created",
            target=user,
            data={"username": user.username, "first_admin": True},
        )
        user_set_role(user=user, role="admin", actor="system:first-run")
    return user, password


def user_set_active(*, user: User, active: bool, actor: Actor, request: HttpRequest | None = None) -> None:
    if isinstance(actor, User) and actor.pk == user.pk and not active:
        raise ApplicationError("You cannot deactivate your own account.")
    with transaction.atomic():
        user.is_active = active
        user.save(update_fields=["is_active"])
        record(
            actor=actor,
            action="user.activated" if active else "user.deactivated",
            target=user,
            request=request,
            data={"username": user.username},
        )
        if not active:
            user_sessions_end(user=user, reason=UserSession.EndReason.DEACTIVATED, actor=actor, request=request)


def user_unlock(*, username: str, actor: Actor, request: HttpRequest | None = None) -> int:
    """Clear django-axes' failure records for a username (every IP); returns how many."""
    removed = int(AxesProxyHandler.reset_attempts(username=username))
    record(
        actor=actor,
        action="user.unlocked",
        target=("accounts.user", username),
        request=request,
        data={"username": username, "attempts_cleared": removed},
    )
    return removed


def user_reset_otp(*, user: User, actor: Actor, request: HttpRequest | None = None) -> None:
    """Remove a user's authenticator and backup codes; they enroll again at their next login."""
    with transaction.atomic():
        SealedTOTPDevice.objects.filter(user=user).delete()
        BackupCodeDevice.objects.filter(user=user).delete()
        record(actor=actor, action="user.otp_reset", target=user, request=request, data={"username": user.username})
        user_sessions_end(user=user, reason=UserSession.EndReason.OTP_RESET, actor=actor, request=request)


def user_password_changed(*, request: HttpRequest, user: User) -> int:
    """After a password change: keep this session, end every other one. Returns how many ended."""
    update_session_auth_hash(request, user)
    with transaction.atomic():
        record(actor=user, action="user.password_changed", target=user, request=request)
        return user_sessions_end(
            user=user,
            reason=UserSession.EndReason.PASSWORD_CHANGED,
            actor=user,
            request=request,
            except_key=request.session.session_key,
        )


# -- the OTP step -------------------------------------------------------------------------


def confirmed_totp_device(user: User) -> SealedTOTPDevice | None:
    device: SealedTOTPDevice | None = SealedTOTPDevice.objects.filter(user=user, confirmed=True).first()
    return device


class OtpOutcome(Enum):
    OK = "ok"
    FAILED = "failed"
    THROTTLED = "throttled"
    LOCKED = "locked"


@dataclass(frozen=True)
class OtpResult:
    outcome: OtpOutcome
    retry_at: datetime | None = None
    used_backup_code: bool = False


def _credentials(user: User) -> dict[str, Any]:
    return {"username": user.get_username(), "stage": "otp"}


def _otp_failed(request: HttpRequest, user: User) -> bool:
    """Report an OTP failure to django-axes as a login failure; True if that locked the user out."""
    user_login_failed.send(sender=__name__, credentials=_credentials(user), request=request)
    return bool(getattr(request, "axes_locked_out", False))


def login_is_locked(request: HttpRequest, user: User) -> bool:
    return not AxesProxyHandler.is_allowed(request, _credentials(user))


def _check_code(request: HttpRequest, user: User, device: SealedTOTPDevice | BackupCodeDevice, code: str) -> OtpResult:
    """Throttle check, verification, and a failure reported to django-axes: the one path for every code."""
    allowed, info = device.verify_is_allowed()
    if not allowed:
        # A throttled attempt still counts: guessing faster than allowed is still guessing.
        locked = _otp_failed(request, user)
        return OtpResult(
            OtpOutcome.LOCKED if locked else OtpOutcome.THROTTLED, retry_at=(info or {}).get("locked_until")
        )
    with transaction.atomic():
        if _verify(device, code):
            return OtpResult(OtpOutcome.OK, used_backup_code=isinstance(device, BackupCodeDevice))
    locked = _otp_failed(request, user)
    return OtpResult(OtpOutcome.LOCKED if locked else OtpOutcome.FAILED)


def login_verify_otp(*, request: HttpRequest, code: str) -> OtpResult:
    """Second login step: a TOTP code (or a backup code) for the password-authenticated user."""
    user: User = request.user  # type: ignore[assignment]
    if login_is_locked(request, user):
        return OtpResult(OtpOutcome.LOCKED)
    code = code.strip()
    totp = confirmed_totp_device(user)
    if totp is None:
        raise ApplicationError("No authenticator is enrolled for this account.")
    device: SealedTOTPDevice | BackupCodeDevice | None = (
        totp if code.isdigit() else BackupCodeDevice.objects.filter(user=user).first()
    )
    if device is None:  # a backup code, but none were ever generated
        locked = _otp_failed(request, user)
        return OtpResult(OtpOutcome.LOCKED if locked else OtpOutcome.FAILED)
    result = _check_code(request, user, device, code)
    if result.outcome is OtpOutcome.OK:
        session_start(request=request, device=device, used_backup_code=result.used_backup_code)
    return result


def _verify(device: SealedTOTPDevice | BackupCodeDevice, code: str) -> bool:
    # Lock the device row: two requests racing with one code must not both pass.
    locked = type(device).objects.select_for_update().get(pk=device.pk)
    return bool(locked.verify_token(code))


def session_start(*, request: HttpRequest, device: SealedTOTPDevice | BackupCodeDevice, used_backup_code: bool) -> None:
    """Mark the session OTP-verified, cycle its key, track it, reset axes, notify a new IP."""
    user: User = request.user  # type: ignore[assignment]
    otp_login(request, device)
    request.session.cycle_key()  # a key seen before verification is worthless after it
    request.session[SESSION_LAST_SEEN] = now_ts()
    request.session.setdefault(SESSION_LOGIN_AT, now_ts())
    request.session.save()
    ip = client_ip(request)
    agent = request.META.get("HTTP_USER_AGENT", "")[:300]
    new_ip = (
        ip is not None
        and UserSession.objects.filter(user=user).exists()
        and not UserSession.objects.filter(user=user, ip=ip).exists()
    )
    assert request.session.session_key is not None
    UserSession.objects.create(user=user, session_key=request.session.session_key, ip=ip, user_agent=agent)
    AxesProxyHandler.reset_attempts(username=user.get_username(), ip_address=ip)
    if used_backup_code:
        remaining = device.remaining() if isinstance(device, BackupCodeDevice) else 0
        record(actor=user, action="otp.backup_code_used", target=user, request=request, data={"remaining": remaining})
    record(actor=user, action="login.success", target=user, request=request, data={"new_ip": new_ip})
    if new_ip:
        notifications.new_ip_login(user=user, ip=ip or "", user_agent=agent)


# -- enrollment and backup codes --------------------------------------------------------------


def otp_enrollment_device(*, user: User) -> SealedTOTPDevice:
    """The unconfirmed authenticator being enrolled (created on first visit)."""
    existing = SealedTOTPDevice.objects.filter(user=user, confirmed=False).first()
    return existing or SealedTOTPDevice.create_for(user)


def otp_secret_text(device: SealedTOTPDevice) -> str:
    """The seed as base32 in groups of four, for typing into an authenticator app."""
    b32 = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def otp_confirm_enrollment(*, request: HttpRequest, code: str) -> tuple[OtpResult, list[str]]:
    """Confirm the authenticator with a code; on success also the backup codes (shown once)."""
    user: User = request.user  # type: ignore[assignment]
    if confirmed_totp_device(user) is not None:
        raise ApplicationError("An authenticator is already enrolled for this account.")
    if login_is_locked(request, user):
        return OtpResult(OtpOutcome.LOCKED), []
    device = otp_enrollment_device(user=user)
    result = _check_code(request, user, device, code.strip())
    if result.outcome is not OtpOutcome.OK:
        return result, []
    with transaction.atomic():
        SealedTOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
        device.refresh_from_db()
        record(actor=user, action="otp.enrolled", target=user, request=request)
        codes = backup_codes_regenerate(user=user, request=request, first=True)
    session_start(request=request, device=device, used_backup_code=False)
    return result, codes


def backup_codes_regenerate(*, user: User, request: HttpRequest | None, first: bool = False) -> list[str]:
    device, _ = BackupCodeDevice.objects.get_or_create(user=user, defaults={"name": "Backup codes"})
    codes: list[str] = device.replace_codes(settings.BACKUP_CODE_COUNT)
    record(
        actor=user,
        action="otp.backup_codes_generated",
        target=user,
        request=request,
        data={"count": len(codes), "first": first},
    )
    return codes


# -- step-up ------------------------------------------------------------------------------


def step_up_is_fresh(request: HttpRequest) -> bool:
    at = request.session.get(SESSION_STEP_UP_AT)
    return at is not None and now_ts() - float(at) < settings.STEP_UP_TTL.total_seconds()


def step_up_verify(*, request: HttpRequest, code: str) -> OtpResult:
    """A fresh TOTP code (not a backup code) opens sensitive actions for STEP_UP_TTL."""
    user: User = request.user  # type: ignore[assignment]
    if login_is_locked(request, user):
        return OtpResult(OtpOutcome.LOCKED)
    totp = confirmed_totp_device(user)
    if totp is None:
        raise ApplicationError("No authenticator is enrolled for this account.")
    code = code.strip()
    result = _check_code(request, user, totp, code) if code.isdigit() else None
    if result is None:
        locked = _otp_failed(request, user)
        result = OtpResult(OtpOutcome.LOCKED if locked else OtpOutcome.FAILED)
    if result.outcome is not OtpOutcome.OK:
        record(actor=user, action="auth.step_up_failed", target=user, request=request)
        return result
    request.session[SESSION_STEP_UP_AT] = now_ts()
    record(actor=user, action="auth.step_up", target=user, request=request)
    return result
