"""Who may see which live event, and who may keep a live socket open."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.db.models import Q
from django.utils.crypto import constant_time_compare
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device

from apps.accounts.models import User
from apps.accounts.sessions import session_expiry_reason
from apps.events.models import Event

VIEW_PERM = "accounts.view_console"
ADMIN_ALERT_PERM = "accounts.manage_exchange_accounts"
ADMIN_AUDIENCE = "admin"


def can_see(user: User, event: Event) -> bool:
    """The one rule, applied to every event before it goes to a socket or into a catch-up page.

    Uses only `has_perm`, which is served from the user's permission cache once warmed (see
    `socket_user`), so consumers may call it on the event loop.
    """
    if not user.is_active or not user.has_perm(VIEW_PERM):
        return False
    admin_only = (
        event.kind == Event.Kind.ALERT
        and isinstance(event.payload, dict)
        and event.payload.get("audience") == ADMIN_AUDIENCE
    )
    return user.has_perm(ADMIN_ALERT_PERM) if admin_only else True


def audience(user: User) -> tuple[bool, bool]:
    """Everything can_see reads from a user: two users with the same audience see the same events.

    Keep it in step with can_see. Sockets are grouped by it so the hub filters once per group.
    """
    return (user.is_active and user.has_perm(VIEW_PERM), user.has_perm(ADMIN_ALERT_PERM))


def visible_events(
    user: User, *, after: int, bot_id: int | None, limit: int = 500, upto: int | None = None
) -> list[Event]:
    """Events after the cursor (and up to `upto`), oldest first, that this user may see."""
    if not user.is_active or not user.has_perm(VIEW_PERM):
        return []
    events = Event.objects.filter(seq__gt=after)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    if bot_id is not None:
        events = events.filter(bot_id=bot_id)
    if not user.has_perm(ADMIN_ALERT_PERM):
        # Filtered in SQL too, so hidden alerts do not eat into `limit`; can_see stays the rule.
        events = events.exclude(Q(kind=Event.Kind.ALERT) & Q(payload__audience=ADMIN_AUDIENCE))
    return [event for event in events.order_by("seq")[:limit] if can_see(user, event)]


def _session_data(session_key: str) -> dict[str, object]:
    engine = import_module(settings.SESSION_ENGINE)
    store = engine.SessionStore(session_key=session_key)
    # load() answers {} for a session that was deleted (logout, ended by an admin) or expired.
    data: dict[str, object] = store.load()
    return data


def socket_user(*, session_key: str | None, user_id: int | None) -> User | None:
    """The user a live socket may serve, read fresh from the database, or None to refuse/close.

    Refuses unless: the session still exists and has not timed out, it belongs to this active
    user (and their current password), it passed the OTP step with a confirmed device of theirs,
    and the user may view the console. Runs at connect and every LIVE_RECHECK_S seconds.
    """
    if not session_key or user_id is None:
        return None
    data = _session_data(session_key)
    if not data or str(data.get(SESSION_KEY)) != str(user_id) or session_expiry_reason(data) is not None:
        return None
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return None
    session_hash = data.get(HASH_SESSION_KEY)
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    if not isinstance(session_hash, str) or not any(constant_time_compare(session_hash, h) for h in hashes):
        return None  # the password changed since this session logged in
    persistent_id = data.get(DEVICE_ID_SESSION_KEY)
    device = Device.from_persistent_id(persistent_id) if isinstance(persistent_id, str) else None
    if device is None or device.user_id != user.pk or not device.confirmed:
        return None
    user.get_all_permissions()  # warm the cache: can_see then never touches the database
    if not user.has_perm(VIEW_PERM):
        return None
    return user
