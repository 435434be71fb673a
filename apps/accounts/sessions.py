"""Sessions: tracked per user (where, since when), ended by logout, timeout, an admin or a password change.

Every end writes an audit entry. The idle and absolute timeouts are one rule for pages and sockets alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import User, UserSession
from apps.audit.services import record

SESSION_LOGIN_AT = "bc_login_at"
SESSION_LAST_SEEN = "bc_last_seen"
SESSION_STEP_UP_AT = "bc_step_up_at"
Actor = User | str


def now_ts() -> float:
    return timezone.now().timestamp()


def _session_store(session_key: str) -> SessionBase:
    engine = import_module(settings.SESSION_ENGINE)
    store: SessionBase = engine.SessionStore(session_key=session_key)
    return store


def session_end(*, user_session: UserSession, reason: str, actor: Actor, request: HttpRequest | None = None) -> None:
    """End one tracked session: delete its Django session and record why."""
    if not user_session.is_active:
        return
    _session_store(user_session.session_key).delete()
    user_session.ended_at = timezone.now()
    user_session.end_reason = reason
    user_session.save(update_fields=["ended_at", "end_reason"])
    record(
        actor=actor,
        action="session.ended",
        target=user_session,
        request=request,
        data={"user": user_session.user.get_username(), "reason": reason},
    )


def user_sessions_end(
    *, user: User, reason: str, actor: Actor, request: HttpRequest | None = None, except_key: str | None = None
) -> int:
    sessions = UserSession.objects.filter(user=user, ended_at__isnull=True).exclude(session_key=except_key or "")
    count = 0
    for user_session in sessions:
        session_end(user_session=user_session, reason=reason, actor=actor, request=request)
        count += 1
    return count


def session_logout(*, request: HttpRequest, reason: str = UserSession.EndReason.LOGOUT) -> None:
    """End the current session (logout, or a timeout found by the middleware)."""
    user = request.user
    key = request.session.session_key
    tracked = UserSession.objects.filter(session_key=key, ended_at__isnull=True).first() if key else None
    if tracked is not None:
        actor: Actor = user if isinstance(user, User) and reason == UserSession.EndReason.LOGOUT else "system:sessions"
        session_end(user_session=tracked, reason=reason, actor=actor, request=request)
    elif isinstance(user, User):
        record(
            actor="system:sessions",
            action="session.ended",
            target=user,
            request=request,
            data={"user": user.get_username(), "reason": reason, "verified": False},
        )
    logout(request)


def session_touch(*, request: HttpRequest) -> None:
    """Note activity; the tracked row is written at most once a minute."""
    now = now_ts()
    last = float(request.session.get(SESSION_LAST_SEEN, 0))
    if now - last < 60:
        return
    request.session[SESSION_LAST_SEEN] = now
    if request.session.session_key:
        UserSession.objects.filter(session_key=request.session.session_key, ended_at__isnull=True).update(
            last_seen=timezone.now()
        )


def session_expiry_reason(session: Mapping[str, Any]) -> str | None:
    """Why a session must end now (idle or absolute timeout), or None.

    Takes the session's data, so the HTTP middleware and the live sockets apply one rule.
    """
    now = now_ts()
    login_at = session.get(SESSION_LOGIN_AT)
    last_seen = session.get(SESSION_LAST_SEEN)
    if login_at is not None and now - float(login_at) > settings.SESSION_ABSOLUTE_TIMEOUT.total_seconds():
        return UserSession.EndReason.ABSOLUTE
    if last_seen is not None and now - float(last_seen) > settings.SESSION_IDLE_TIMEOUT.total_seconds():
        return UserSession.EndReason.IDLE
    return None
