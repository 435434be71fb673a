"""Reading the audit log for its pages and exports.

Pages are keyset-paginated on `seq` (newest first): a page is `seq < cursor ORDER BY seq DESC
LIMIT n`, one index range whatever the depth, and nothing ever counts the table. Every filter
has an index that PostgreSQL can combine with that order (see the model's indexes and
migration 0004 for the text search).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet, TextField
from django.db.models.expressions import RawSQL

from apps.audit.chain import canonical_time
from apps.audit.models import AuditCheckpoint, AuditEntry, AuditVerification

PAGE_SIZE = 50
EXPORT_BATCH = 2000
# Identical to the trigram index expression of migration 0004, or the index is not used.
SEARCH_EXPRESSION = "lower(action || ' ' || actor || ' ' || target_type || ' ' || target_id || ' ' || data::text)"
# A failed sign-in records the user name as it was typed, and that is sometimes a password typed
# into the wrong field: only admins see it (and find it by searching); others read HIDDEN, in its
# "username" and wherever else the entry repeats it (the lockout alert's message).
TYPED_USERNAME_ACTIONS = ("login.failed", "login.locked_out", "alert.login_locked_out")
HIDDEN = "(hidden)"
# The search expression without that user name, for readers who may not see it.
SEARCH_EXPRESSION_HIDING = (
    "lower(action || ' ' || actor || ' ' || target_type || ' ' || target_id || ' ' || "
    "(CASE WHEN jsonb_typeof(data) = 'object' THEN data - ARRAY['username', 'message'] ELSE data END)::text)"
)
EXPORT_FIELDS = (
    "seq",
    "created_at",
    "actor",
    "actor_user_id",
    "ip",
    "otp_verified",
    "action",
    "target_type",
    "target_id",
    "data",
    "prev_hash",
    "hash",
)


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    action: str = ""  # exact, or a prefix when it ends with "*"
    target_type: str = ""
    target_id: str = ""
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until
    text: str = ""  # lower-cased; searched in action, actor, target and data

    def as_audit_data(self) -> dict[str, str]:
        """The filters as they go into the audit entry of an export."""
        values = {
            "actor": self.actor,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "text": self.text,
            "since": canonical_time(self.since) if self.since else "",
            "until": canonical_time(self.until) if self.until else "",
        }
        return {k: v for k, v in values.items() if v}


def hide_typed_usernames(entries: Iterable[AuditEntry]) -> None:
    """Mask, on these in-memory entries, the user name a failed sign-in recorded as typed."""
    for entry in entries:
        if entry.action not in TYPED_USERNAME_ACTIONS or not isinstance(entry.data, dict):
            continue
        typed = str(entry.data.get("username") or "")
        data = {k: (v.replace(typed, HIDDEN) if typed and isinstance(v, str) else v) for k, v in entry.data.items()}
        if "username" in data:
            data["username"] = HIDDEN
        entry.data = data


def audit_entries(filters: AuditFilters, *, reveal_typed_usernames: bool = False) -> QuerySet[AuditEntry]:
    """Entries matching the filters, unordered.

    Without reveal_typed_usernames, the text search does not look into the hidden user names:
    finding an entry by a word would tell the word is there.
    """
    qs = AuditEntry.objects.all()
    if filters.actor:
        qs = qs.filter(actor=filters.actor)
    if filters.action.endswith("*"):
        qs = qs.filter(action__startswith=filters.action[:-1])
    elif filters.action:
        qs = qs.filter(action=filters.action)
    if filters.target_type:
        qs = qs.filter(target_type=filters.target_type)
    if filters.target_id:
        qs = qs.filter(target_id=filters.target_id)
    if filters.since:
        qs = qs.filter(created_at__gte=filters.since)
    if filters.until:
        qs = qs.filter(created_at__lt=filters.until)
    if filters.text:
        # `alias`, not `annotate`: the expression is only filtered on, never selected.
        # The expression is a constant (no input in it); the search term goes in as a parameter.
        search = RawSQL(SEARCH_EXPRESSION, (), output_field=TextField())  # noqa: S611  # nosec B611
        qs = qs.alias(search=search).filter(search__contains=filters.text)
        if not reveal_typed_usernames:
            hiding = RawSQL(SEARCH_EXPRESSION_HIDING, (), output_field=TextField())  # noqa: S611  # nosec B611
            qs = qs.alias(search_hiding=hiding).filter(
                ~Q(action__in=TYPED_USERNAME_ACTIONS) | Q(search_hiding__contains=filters.text)
            )
    return qs


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    newer_cursor: int | None  # pass as `after` for the newer page
    older_cursor: int | None  # pass as `before` for the older page


def audit_page(
    filters: AuditFilters,
    *,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
    reveal_typed_usernames: bool = False,
) -> AuditPage:
    """One page of matching entries, newest first, before or after a cursor seq (keyset)."""
    qs = audit_entries(filters, reveal_typed_usernames=reveal_typed_usernames)
    if after is not None:
        rows = list(qs.filter(seq__gt=after).order_by("seq")[: size + 1])
        more_newer = len(rows) > size
        entries = rows[:size][::-1]
        more_older = qs.filter(seq__lte=after).exists()
    else:
        window = qs.filter(seq__lt=before) if before is not None else qs
        rows = list(window.order_by("-seq")[: size + 1])
        more_older = len(rows) > size
        entries = rows[:size]
        more_newer = before is not None and qs.filter(seq__gte=before).exists()
    if not reveal_typed_usernames:
        hide_typed_usernames(entries)
    if not entries:
        # An empty window (e.g. a cursor past the end): offer the way back, not a dead end.
        return AuditPage(
            [],
            newer_cursor=before - 1 if more_newer and before else None,
            older_cursor=after + 1 if more_older and after is not None else None,
        )
    return AuditPage(
        entries,
        newer_cursor=entries[0].seq if more_newer else None,
        older_cursor=entries[-1].seq if more_older else None,
    )


def audit_head_seq() -> int:
    return AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0


def audit_export_batches(
    filters: AuditFilters, *, upto: int, batch: int = EXPORT_BATCH, reveal_typed_usernames: bool = False
) -> Iterator[list[AuditEntry]]:
    """Every matching entry up to #upto, oldest first, in keyset batches (constant memory).

    With the typed user names hidden, those entries' hashes cannot be recomputed from the export;
    an admin's export is exact."""
    qs = audit_entries(filters, reveal_typed_usernames=reveal_typed_usernames).filter(seq__lte=upto).order_by("seq")
    last = 0
    while True:
        rows = list(qs.filter(seq__gt=last)[:batch])
        if not rows:
            return
        last = rows[-1].seq
        if not reveal_typed_usernames:
            hide_typed_usernames(rows)
        yield rows


def entry_record(entry: AuditEntry) -> dict[str, Any]:
    """An entry as exported: every field the hash covers, so a reader can recompute the chain."""
    return {
        "seq": entry.seq,
        "created_at": canonical_time(entry.created_at),
        "actor": entry.actor,
        "actor_user_id": entry.actor_user_id,
        "ip": entry.ip,
        "otp_verified": entry.otp_verified,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }


# -- an entry's detail ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffRow:
    key: str
    before: str
    after: str
    change: str  # "changed", "added", "removed", "same"


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def data_diff(data: Any) -> list[DiffRow] | None:
    """Rows of a before/after diff when the entry's data has "before" and/or "after", else None.

    Services record changes as {"before": {...}, "after": {...}} (only the changed keys, or a
    whole snapshot on creation); any other shape is shown as plain data.
    """
    if not isinstance(data, dict) or not ({"before", "after"} & data.keys()):
        return None
    before, after = data.get("before"), data.get("after")
    if not isinstance(before, dict | None) or not isinstance(after, dict | None):
        # Scalars: one row for the whole value.
        change = "changed" if before != after else "same"
        return [
            DiffRow("value", _show(before) if "before" in data else "", _show(after) if "after" in data else "", change)
        ]
    before, after = before or {}, after or {}
    rows = []
    for key in sorted(before.keys() | after.keys()):
        if key not in before:
            rows.append(DiffRow(key, "", _show(after[key]), "added"))
        elif key not in after:
            rows.append(DiffRow(key, _show(before[key]), "", "removed"))
        else:
            change = "changed" if before[key] != after[key] else "same"
            rows.append(DiffRow(key, _show(before[key]), _show(after[key]), change))
    return rows


def covering_checkpoint(seq: int) -> AuditCheckpoint | None:
    """The first signed checkpoint at or after #seq: it vouches for this entry."""
    return AuditCheckpoint.objects.filter(seq__gte=seq).order_by("seq").first()


# -- the chain state banner ----------------------------------------------------------------------


@dataclass(frozen=True)
class ChainState:
    status: str  # "verified", "broken" or "unknown"
    shown: AuditVerification | None  # the run the banner reports
    failed_run: AuditVerification | None  # a later run that could not complete, if any
    last_checkpoint: AuditCheckpoint | None
    head_seq: int


def audit_chain_state() -> ChainState:
    """What the banner says. Only a full run may say "verified up to #N"; any later break wins."""
    runs = AuditVerification.objects.order_by("-finished_at", "-pk")
    full = runs.filter(scope=AuditVerification.Scope.FULL).exclude(status=AuditVerification.Status.ERROR).first()
    since_full = runs.filter(finished_at__gt=full.finished_at) if full else runs
    broken = since_full.filter(status=AuditVerification.Status.BROKEN).first()
    error = since_full.filter(status=AuditVerification.Status.ERROR).first()
    if broken is not None:
        status, shown = "broken", broken
    elif full is not None:
        status, shown = ("verified" if full.status == AuditVerification.Status.OK else "broken"), full
    else:
        status, shown = "unknown", None
    return ChainState(status, shown, error, AuditCheckpoint.objects.order_by("-seq").first(), audit_head_seq())


ACTION_SUGGESTIONS_MAX = 500


def audit_action_names() -> list[str]:
    """Every distinct action in the log, for the filter's suggestions (and their prefixes, as `bot.*`).

    A loose index scan over (action, seq): one index probe per distinct action, however long the log.
    """
    sql = (
        "WITH RECURSIVE a(action) AS ("  # noqa: S608 - our own table name, no input
        f" (SELECT action FROM {AuditEntry._meta.db_table} ORDER BY action LIMIT 1)"  # nosec B608
        " UNION ALL"
        f" SELECT (SELECT e.action FROM {AuditEntry._meta.db_table} e WHERE e.action > a.action"  # nosec B608
        "  ORDER BY e.action LIMIT 1) FROM a WHERE a.action IS NOT NULL"
        ") SELECT action FROM a WHERE action IS NOT NULL LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [ACTION_SUGGESTIONS_MAX])
        actions = [str(row[0]) for row in cursor.fetchall()]
    prefixes = sorted({a.split(".", 1)[0] + ".*" for a in actions if "." in a})
    return prefixes + actions
