"""The hash chain: how an entry's hash is computed from its fields and the previous hash."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    *,
    seq: int,
    created_at: datetime,
    actor_user_id: int | None,
    actor: str,
    ip: str | None,
    otp_verified: bool,
    action: str,
    target_type: str,
    target_id: str,
    data: Any,
    prev_hash: str,
) -> str:
    payload = {
        "seq": seq,
        "created_at": canonical_time(created_at),
        "actor_user_id": actor_user_id,
        "actor": actor,
        "ip": ip,
        "otp_verified": otp_verified,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "data": data,
        "prev_hash": prev_hash,
    }
    # Sorted keys and fixed separators: the same entry always encodes to the same bytes.
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode()).hexdigest()


def checkpoint_message(*, seq: int, entry_hash: str, signed_at: datetime) -> bytes:
    """The bytes a checkpoint signature covers: which entry, its hash, and when it was signed."""
    payload = {
        "kind": "botconsole.audit-checkpoint.v1",
        "seq": seq,
        "hash": entry_hash,
        "signed_at": canonical_time(signed_at),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
