"""A review's unusual events: gate refusals, breakers, foreign orders, kills, logins, failing checks, alerts."""

from __future__ import annotations

from typing import Any

from django.db.models import CharField, Count, F, Max, Min
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce

from apps.accounts.models import User
from apps.alerts.models import Alert
from apps.audit.models import AuditEntry
from apps.killswitch.models import BreakerRule, BreakerTrip, KillRun
from apps.reviews.figures import when
from apps.reviews.periods import Period
from apps.trading.models import GateRefusal

FAILED_LOGIN_ACTIONS = ("login.failed", "login.otp_failed", "auth.step_up_failed")
# What a review shows for a typed user name that is no user's: it is sometimes a password typed in the
# wrong field. The same for every reader, so every reader's review (and its digest) is the same.
NOT_A_USER = "(not a user)"
# Alert kinds that have a section of their own; every other kind is listed under "other alerts".
SECTION_ALERTS = ("circuit_breaker", "foreign_order", "key_check_failed", "deadman_failing", "login_locked_out")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _alerts(period: Period) -> Any:
    return Alert.objects.filter(created_at__gte=period.start, created_at__lt=period.end).order_by("created_at", "id")


def _audit(period: Period) -> Any:
    return AuditEntry.objects.filter(created_at__gte=period.start, created_at__lt=period.end).order_by("seq")


def _gate_refusals(period: Period) -> list[dict[str, Any]]:
    reasons = dict(GateRefusal.Reason.choices)
    refusals = (
        GateRefusal.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
        .values("bot_id", "bot__name", "reason")
        .annotate(count=Count("id"), first=Min("created_at"), last=Max("created_at"))
        .order_by("bot__name", "reason")
    )
    return [
        {
            "bot_id": r["bot_id"],
            "bot": r["bot__name"],
            "reason": r["reason"],
            "reason_label": reasons.get(r["reason"], r["reason"]),
            "count": r["count"],
            "first": when(r["first"]),
            "last": when(r["last"]),
        }
        for r in refusals
    ]


def _breakers(period: Period, alerts: Any) -> list[dict[str, Any]]:
    """The breakers' trips, and the order gate's own halts (circuit-breaker alerts with no trip)."""
    breakers: list[dict[str, Any]] = []
    kinds = dict(BreakerRule.Kind.choices)
    for trip in BreakerTrip.objects.filter(tripped_at__gte=period.start, tripped_at__lt=period.end).order_by(
        "tripped_at", "id"
    ):
        breakers.append(
            {
                "at": when(trip.tripped_at),
                "source": kinds.get(trip.kind, trip.kind),
                "subject": trip.subject,
                "action": trip.action,
                "message": trip.message,
                "cleared_at": when(trip.cleared_at),
            }
        )
    for alert in alerts.filter(kind="circuit_breaker").exclude(data__has_key="trip"):
        subject = f"bot:{alert.data.get('bot')}"
        breakers.append(
            {
                "at": when(alert.created_at),
                "source": "Order gate",
                "subject": subject,
                "action": "halt_bot",
                "message": alert.message,
                "cleared_at": None,
            }
        )
    breakers.sort(key=lambda b: b["at"])
    return breakers


def _foreign_orders(alerts: Any, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "at": when(a.created_at),
            "account": labels.get(str(a.data.get("account")), str(a.data.get("account"))),
            "symbol": a.data.get("symbol"),
            "side": a.data.get("side"),
            "amount": _text(a.data.get("amount")),
            "price": _text(a.data.get("price")),  # none for a market order
            "exchange_order_id": a.data.get("exchange_order_id"),
            "message": a.message,
        }
        for a in alerts.filter(kind="foreign_order")
    ]


def _kills(period: Period) -> list[dict[str, Any]]:
    return [
        {
            "id": k.pk,
            "at": when(k.created_at),
            "scope": k.scope,
            "bot": k.bot.name if k.bot else None,
            "reason": k.reason,
            "requested_by": k.requested_by.username if k.requested_by else f"({k.requested_via})",
            "status": k.status,
            "cancelled": k.orders_cancelled,
            "still_open": k.still_open_text,  # "unknown (…)" when an account was not reached, never 0
        }
        for k in KillRun.objects.filter(created_at__gte=period.start, created_at__lt=period.end)
        .select_related("bot", "requested_by")
        .order_by("created_at", "id")
    ]


def _login_trouble(period: Period) -> dict[str, list[dict[str, Any]]]:
    """Failed logins (per typed name and action) and lockouts. A typed name that is no user's is shown
    as NOT_A_USER: it is sometimes a password typed in the wrong field."""
    failed_rows = list(
        _audit(period)
        .filter(action__in=FAILED_LOGIN_ACTIONS)
        .annotate(username=Coalesce(KeyTextTransform("username", "data"), F("actor"), output_field=CharField()))
        .values("action", "username")
        .annotate(
            count=Count("seq"), addresses=Count("ip", distinct=True), first=Min("created_at"), last=Max("created_at")
        )
        .order_by("username", "action")
    )
    lockout_entries = list(_audit(period).filter(action="login.locked_out"))
    typed = {str(r["username"]) for r in failed_rows} | {str(e.data.get("username", "")) for e in lockout_entries}
    users = set(User.objects.filter(username__in=typed).values_list("username", flat=True))

    def shown(name: object) -> str:
        return str(name) if str(name) in users else NOT_A_USER

    return {
        "failed_logins": [
            {
                "action": r["action"],
                "username": shown(r["username"]),
                "count": r["count"],
                "addresses": r["addresses"],
                "first": when(r["first"]),
                "last": when(r["last"]),
            }
            for r in failed_rows
        ],
        "lockouts": [
            {
                "seq": e.seq,
                "at": when(e.created_at),
                "username": shown(e.data.get("username", "")),
                "ip": e.data.get("ip") or e.ip,
            }
            for e in lockout_entries
        ],
    }


def period_events(period: Period, labels: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """`labels`: account labels by id, for the alerts that name an account."""
    alerts = _alerts(period)
    logins = _login_trouble(period)
    return {
        "gate_refusals": _gate_refusals(period),
        "breakers": _breakers(period, alerts),
        "foreign_orders": _foreign_orders(alerts, labels),
        "kills": _kills(period),
        "new_ip_logins": [
            {"seq": e.seq, "at": when(e.created_at), "user": e.actor, "ip": e.ip}
            for e in _audit(period).filter(action="login.success", data__new_ip=True)
        ],
        "failed_logins": logins["failed_logins"],
        "lockouts": logins["lockouts"],
        "key_check_failures": [
            {"at": when(a.created_at), "account": labels.get(str(a.data.get("account")), ""), "message": a.message}
            for a in alerts.filter(kind="key_check_failed")
        ],
        "deadman_failures": [
            {"at": when(a.created_at), "severity": a.severity, "message": a.message}
            for a in alerts.filter(kind="deadman_failing")
        ],
        "other_alerts": [
            {"at": when(a.created_at), "kind": a.kind, "severity": a.severity, "message": a.message}
            for a in alerts.exclude(kind__in=SECTION_ALERTS)
        ],
    }
