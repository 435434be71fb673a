"""What a day's or a month's review shows, built from the database as one JSON-ready dict.

The same dict is rendered as the page, exported as CSV and JSON, and hashed (SHA-256 of its
canonical JSON) for sign-offs: a reviewer signs exactly what the export contains. It holds only
what the period's rows say (never "now": no live prices, no ages), so it changes only when the
underlying data does. Amounts are decimal strings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import Q
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.exchanges.models import ExchangeAccount
from apps.reviews.balance_checks import balance_check, fund_movements
from apps.reviews.figures import when
from apps.reviews.models import ReviewSignoff
from apps.reviews.period_events import period_events
from apps.reviews.periods import Period
from apps.reviews.trades import pnl_tables, trade_rows

FORMAT_VERSION = 1


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def review_digest(data: dict[str, Any]) -> str:
    """SHA-256 (hex) of the review's canonical JSON: sorted keys, no spaces, UTF-8."""
    return hashlib.sha256(canonical_json(data)).hexdigest()


# -- the review -----------------------------------------------------------------------------------


def review_build(period: Period) -> dict[str, Any]:
    """The whole review of a period, JSON-ready; the same input always gives the same dict."""
    rows = sorted(trade_rows(period), key=lambda r: (r.mode != "live", r.bot, r.symbol))
    per_bot, totals = pnl_tables(rows)
    accounts = list(ExchangeAccount.objects.order_by("label"))
    checks = [balance_check(account, period) for account in accounts]
    labels = {str(a.pk): a.label for a in accounts}
    return {
        "format": FORMAT_VERSION,
        "period": {"kind": period.kind, "key": period.key, "start": when(period.start), "end": when(period.end)},
        "trades": [r.as_dict() for r in rows],
        "pnl": per_bot,
        "pnl_totals": totals,
        "balances": checks,
        "fund_movements": fund_movements([c for c in checks if c["status"] in ("ok", "mismatch")]),
        "events": period_events(period, labels),
    }


# -- sign-offs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignoffView:
    signoff: ReviewSignoff
    current: bool  # the review still has the digest that was signed
    audit_matches: bool  # the audit entry names the same reviewer, period and digest


def _matches(signoff: ReviewSignoff, entry: AuditEntry | None) -> bool:
    if entry is None or entry.action != "review.signed_off" or entry.actor_user_id != signoff.signed_by_id:
        return False
    data = entry.data if isinstance(entry.data, dict) else {}
    return bool(
        data.get("digest") == signoff.digest
        and data.get("kind") == signoff.period_kind
        and data.get("period") == signoff.period
        and data.get("note", "") == signoff.note
    )


def signoffs_for(period: Period, digest: str) -> list[SignoffView]:
    signoffs = list(
        ReviewSignoff.objects.filter(period_kind=period.kind, period=period.key).select_related("signed_by")
    )
    entries = AuditEntry.objects.in_bulk([s.audit_seq for s in signoffs])
    return [SignoffView(s, s.digest == digest, _matches(s, entries.get(s.audit_seq))) for s in signoffs]


def latest_signoffs(periods: Iterable[Period]) -> dict[tuple[str, str], ReviewSignoff]:
    """The newest sign-off of each period, in one query."""
    wanted = Q()
    for p in periods:
        wanted |= Q(period_kind=p.kind, period=p.key)
    found: dict[tuple[str, str], ReviewSignoff] = {}
    for s in ReviewSignoff.objects.filter(wanted).select_related("signed_by").order_by("-signed_at", "-id"):
        found.setdefault((s.period_kind, s.period), s)
    return found


# -- links to the audit log -----------------------------------------------------------------------

AUDIT_SECTIONS = {
    "trades": {"action": "order.*"},
    "balances": {"action": "review.balance_snapshot"},
    "gate_refusals": {"action": "gate.refused"},
    "breakers": {"action": "alert.circuit_breaker"},
    "foreign_orders": {"action": "reconcile.foreign_order"},
    "kills": {"action": "killswitch.*"},
    "new_ip_logins": {"action": "login.success", "q": '"new_ip": true'},
    "failed_logins": {"action": "login.*"},
    "lockouts": {"action": "login.locked_out"},
    "key_check_failures": {"action": "alert.key_check_failed"},
    "deadman_failures": {"action": "alert.deadman_failing"},
    "other_alerts": {"action": "alert.*"},
}


def audit_links(period: Period) -> dict[str, str]:
    """The audit log filtered to the period (apps.audit.forms GET parameters), per section."""
    base = reverse("audit:list")
    span = {"since": f"{period.start:%Y-%m-%dT%H:%M}", "until": f"{period.end:%Y-%m-%dT%H:%M}"}
    links = {name: f"{base}?{urlencode({**span, **extra})}" for name, extra in AUDIT_SECTIONS.items()}
    links["period"] = f"{base}?{urlencode(span)}"
    links["review"] = f"{base}?{urlencode({'target': f'reviews.review:{period.target_id}'})}"
    return links
