"""Writing and verifying the audit log."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.http import HttpRequest
from django.utils import timezone

from apps.audit.chain import GENESIS_HASH, entry_hash
from apps.audit.context import Via, current_via, via_of
from apps.audit.models import AuditEntry

# pg_advisory_xact_lock key that serializes appends: one linear chain, whatever the writers.
AUDIT_LOCK_KEY = 0x6175646974  # "audit"
SYSTEM_PREFIX = "system:"
_SURROGATE = re.compile("[\ud800-\udfff]")

Target = models.Model | tuple[str, Any] | None


def _via(actor: AbstractBaseUser | str, request: HttpRequest | Via | None) -> Via:
    """The person's address and verification: from the request given, else from the request (or the
    recorded press) this runs on behalf of, when that was the same person's; a system actor has neither."""
    if isinstance(request, HttpRequest):
        return via_of(request)
    if isinstance(actor, str):
        return Via(ip=None, otp_verified=False)
    via = request if request is not None else current_via()
    if via is None or via.user_id != actor.pk:
        return Via(ip=None, otp_verified=False)
    return via


def _db_text(value: str) -> str:
    # PostgreSQL refuses NUL in text and \u0000 in jsonb, and an unpaired surrogate cannot be encoded at
    # all: an audit entry must never fail because of the text it quotes, so those become U+FFFD.
    if "\x00" not in value and not _SURROGATE.search(value):
        return value
    return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))


def _db_safe(value: Any) -> Any:
    """`value` (JSON data: dicts, lists, strings, numbers) with every string made storable, keys included."""
    if isinstance(value, str):
        return _db_text(value)
    if isinstance(value, dict):
        return {_db_text(str(k)): _db_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_db_safe(v) for v in value]
    return value


def _target(target: Target) -> tuple[str, str]:
    if target is None:
        return "", ""
    if isinstance(target, models.Model):
        return target._meta.label_lower, _db_text(str(target.pk))
    kind, ident = target
    return _db_text(str(kind)), _db_text(str(ident))


def record(
    *,
    actor: AbstractBaseUser | str,
    action: str,
    target: Target = None,
    data: dict[str, Any] | None = None,
    request: HttpRequest | Via | None = None,
) -> AuditEntry:
    """Append one entry to the audit log and return it.

    `actor` is a user, or "system:<component>" for anything that is not a person. Runs in
    the caller's transaction when there is one, so the entry commits (or not) together with
    the change it describes. Never put a secret in `data`.
    """
    if isinstance(actor, str):
        if not actor.startswith(SYSTEM_PREFIX):
            raise ValueError(f"a non-user actor must be named '{SYSTEM_PREFIX}<component>', not {actor!r}")
        actor_user_id, actor_name = None, _db_text(actor)
    else:
        actor_user_id, actor_name = actor.pk, _db_text(actor.get_username())
    via = _via(actor, request)
    target_type, target_id = _target(target)
    # Round-trip through JSON so we hash exactly what PostgreSQL will store and return, then make every
    # string storable (the hash is taken over the cleaned data, so the chain verifies as stored).
    clean_data = _db_safe(json.loads(json.dumps(data or {}, cls=DjangoJSONEncoder)))
    action = _db_text(action)

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK_KEY])
        last = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        fields: dict[str, Any] = {
            "seq": seq,
            "created_at": timezone.now(),
            "actor_user_id": actor_user_id,
            "actor": actor_name,
            "ip": via.ip,
            "otp_verified": via.otp_verified,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "data": clean_data,
            "prev_hash": prev_hash,
        }
        return AuditEntry.objects.create(hash=entry_hash(**fields), **fields)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    last_seq: int
    last_hash: str
    broken_seq: int | None = None
    reason: str = ""


def verify_entries(
    rows: Iterable[tuple[Any, ...]], *, start_seq: int = 1, prev_hash: str = GENESIS_HASH
) -> ChainReport:
    """Walk rows of (seq, created_at, ..., prev_hash, hash) in seq order; stop at the first break.

    By default from #1; from a later entry with `start_seq` and the hash of the entry before it.
    """
    expected_seq, checked = start_seq, 0
    for row in rows:
        (
            seq,
            created_at,
            actor_user_id,
            actor,
            ip,
            otp_verified,
            action,
            target_type,
            target_id,
            data,
            stored_prev,
            stored_hash,
        ) = row
        if seq != expected_seq:
            reason = f"entry #{expected_seq} is missing" if seq > expected_seq else f"entry #{seq} is out of order"
            return ChainReport(False, checked, expected_seq - 1, prev_hash, expected_seq, reason)
        if stored_prev != prev_hash:
            reason = "its prev_hash does not match the entry before it"
            return ChainReport(False, checked, seq - 1, prev_hash, seq, reason)
        computed = entry_hash(
            seq=seq,
            created_at=created_at,
            actor_user_id=actor_user_id,
            actor=actor,
            ip=ip,
            otp_verified=otp_verified,
            action=action,
            target_type=target_type,
            target_id=target_id,
            data=data,
            prev_hash=stored_prev,
        )
        if computed != stored_hash:
            return ChainReport(False, checked, seq - 1, prev_hash, seq, "its content does not match its hash")
        prev_hash, expected_seq, checked = stored_hash, seq + 1, checked + 1
    return ChainReport(True, checked, expected_seq - 1, prev_hash)


def audit_verify_chain(*, chunk_size: int = 5000, after_seq: int = 0, after_hash: str = GENESIS_HASH) -> ChainReport:
    """Verify the chain from #1 (or from after a known entry); the report names the first broken seq."""
    rows = (
        AuditEntry.objects.filter(seq__gt=after_seq)
        .order_by("seq")
        .values_list(
            "seq",
            "created_at",
            "actor_user_id",
            "actor",
            "ip",
            "otp_verified",
            "action",
            "target_type",
            "target_id",
            "data",
            "prev_hash",
            "hash",
        )
        .iterator(chunk_size=chunk_size)
    )
    return verify_entries(rows, start_seq=after_seq + 1, prev_hash=after_hash)


def audit_export_start(*, actor: AbstractBaseUser, filters: Any, fmt: str, request: HttpRequest | None = None) -> int:
    """Audit an export and return the last seq it covers (its own entry, written after, is not in it)."""
    upto = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    record(
        actor=actor,
        action="audit.exported",
        request=request,
        data={"format": fmt, "filters": filters.as_audit_data(), "upto_seq": upto},
    )
    return upto
