"""Writing and verifying the audit log."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import DatabaseError, connection, models, transaction
from django.http import HttpRequest

from apps.audit.chain import GENESIS_HASH, EntryText
from apps.audit.context import Via, current_via, via_of
from apps.audit.models import AuditEntry
from apps.audit.verify import ChainReport, chain_verify
from apps.core.text import json_safe

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


def _as_stored_number(value: float) -> float | int:
    # jsonb keeps a number as an exact decimal and prints it without an exponent and without a sign on
    # zero: 1e+300 comes back as 1000...0 (an integer to json.loads), -0.0 as 0.0. Hash what comes back,
    # or the entry would not verify as stored. (NaN and infinities: jsonb refuses them, and says so.)
    if math.isnan(value) or math.isinf(value):
        return value
    if value == 0:
        return 0.0
    stored: float | int = json.loads(format(Decimal(repr(value)), "f"))
    return stored


def _db_safe(value: Any) -> Any:
    """`value` (JSON data: dicts, lists, strings, numbers) with every string made storable, keys included,
    and every number as the database will return it."""
    if isinstance(value, str):
        return _db_text(value)
    if isinstance(value, float):
        return _as_stored_number(value)
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
    clean_data = _db_safe(json_safe(data or {}))
    action = _db_text(action)
    # Everything but seq, created_at and prev_hash is encoded here, before the lock; audit_append
    # (migration 0005) takes the lock, finishes the text with those three, hashes and inserts: one
    # statement, so the lock is held for no round trip to this process.
    text = EntryText.of(
        actor_user_id=actor_user_id,
        actor=actor_name,
        ip=via.ip,
        otp_verified=via.otp_verified,
        action=action,
        target_type=target_type,
        target_id=target_id,
        data=clean_data,
    )
    params = [
        AUDIT_LOCK_KEY,
        GENESIS_HASH,
        actor_user_id,
        actor_name,
        via.ip,
        via.otp_verified,
        action,
        target_type,
        target_id,
        json.dumps(clean_data, ensure_ascii=False),
        text.head,
        text.middle,
        text.tail,
    ]
    if connection.get_autocommit() and not connection.in_atomic_block:
        # On its own the statement is its own transaction: the lock goes with its commit.
        row = _append(params)
    else:
        # In the caller's transaction (and savepoint, so a refused entry leaves it usable): the entry
        # commits with the change it describes, and the lock is held until then.
        with transaction.atomic():
            row = _append(params)
    seq, created_at, prev_hash, entry_hash = row
    entry = AuditEntry(
        seq=seq,
        created_at=created_at,
        actor_user_id=actor_user_id,
        actor=actor_name,
        ip=via.ip,
        otp_verified=via.otp_verified,
        action=action,
        target_type=target_type,
        target_id=target_id,
        data=clean_data,
        prev_hash=prev_hash,
        hash=entry_hash,
    )
    entry._state.adding, entry._state.db = False, connection.alias
    return entry


_APPEND_SQL = "SELECT * FROM audit_append(%s, %s, %s, %s, %s::inet, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)"


def _append(params: list[Any]) -> tuple[int, datetime, str, str]:
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_SQL, params)
        row = cursor.fetchone()
    if row is None:  # the function always returns its row; anything else is a broken database
        raise DatabaseError("audit_append returned no row")
    return row[0], row[1], row[2], row[3]


def audit_verify_chain(*, chunk_size: int = 5000, after_seq: int = 0, after_hash: str = GENESIS_HASH) -> ChainReport:
    """Verify the chain from #1 (or from after a known entry) up to the last entry when it starts; the
    report names the first broken seq."""
    upto = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    return chain_verify(upto=upto, chunk_size=chunk_size, after_seq=after_seq, after_hash=after_hash)


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
