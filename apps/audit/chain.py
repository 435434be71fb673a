"""The hash chain: how an entry's hash is computed from its fields and the previous hash.

An entry's hash is SHA-256 over one canonical JSON text of its fields (sorted keys, fixed
separators, UTF-8): `entry_hash` is the definition. Appending and verifying build the same text
faster, from pieces (`EntryText`): JSON encodes a value the same wherever it sits, so the object's
text is its sorted `"key":value` members joined. That lets the database finish the text of a new
entry under the append lock (it knows seq, the time and the previous hash only then) and lets the
verifier skip a dict and a sort per row. A test holds both to `entry_hash`, hostile text included.
"""

from __future__ import annotations

import hashlib
import json
import json.scanner
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

# The canonical encodings: a JSON string (quotes and escapes, non-ASCII kept) and a JSON value, as
# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes them.
json_str: Callable[[str], str] = json.encoder.encode_basestring  # the C one when available
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# The verifier encodes a value per entry: json.dumps builds an encoder, and JSONEncoder.encode its C
# iterator, on every call; this one is built once (no circular check: parsed JSON has no cycles).
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_value = (
    _c_encoder(None, _ENCODER.default, json_str, None, ":", ",", True, False, True) if _c_encoder is not None else None
)
# Likewise json.loads wraps the C scanner in two Python calls and a regex per document.
_c_scanner = getattr(json.scanner, "c_make_scanner", None)
_scan_value = _c_scanner(json.JSONDecoder()) if _c_scanner is not None else None


def json_value(value: Any) -> str:
    if _encode_value is None:
        return _ENCODER.encode(value)
    return "".join(_encode_value(value, 0))


def json_parse(text: str) -> Any:
    """json.loads(text), faster for a document that is exactly one value (as PostgreSQL prints jsonb)."""
    if _scan_value is not None and text and not text[0].isspace():
        try:
            value, end = _scan_value(text, 0)
        except StopIteration:
            pass
        else:
            if end == len(text):
                return value
    return json.loads(text)  # anything else, including the error for text that is not JSON


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


@dataclass(frozen=True)
class EntryText:
    """`entry_hash`'s text of one entry, but for the three fields known only under the append lock.

    The whole text is `head + <created_at> + middle + <prev_hash> + '","seq":' + <seq> + tail`
    (keys in sorted order: action, actor, actor_user_id, created_at, data, ip, otp_verified,
    prev_hash, seq, target_id, target_type). `data` must already be what the database stores.
    """

    head: str
    middle: str
    tail: str

    @classmethod
    def of(
        cls,
        *,
        actor_user_id: int | None,
        actor: str,
        ip: str | None,
        otp_verified: bool,
        action: str,
        target_type: str,
        target_id: str,
        data: Any,
    ) -> EntryText:
        return cls(
            head=(
                f'{{"action":{json_str(action)},"actor":{json_str(actor)},'
                f'"actor_user_id":{json_value(actor_user_id)},"created_at":"'
            ),
            middle=(
                f'","data":{json_value(data)},"ip":{json_value(ip)},'
                f'"otp_verified":{json_value(otp_verified)},"prev_hash":"'
            ),
            tail=f',"target_id":{json_str(target_id)},"target_type":{json_str(target_type)}}}',
        )

    def hash(self, *, seq: int, created_at: datetime, prev_hash: str) -> str:
        text = f'{self.head}{canonical_time(created_at)}{self.middle}{prev_hash}","seq":{seq}{self.tail}'
        return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_message(*, seq: int, entry_hash: str, signed_at: datetime) -> bytes:
    """The bytes a checkpoint signature covers: which entry, its hash, and when it was signed."""
    payload = {
        "kind": "botconsole.audit-checkpoint.v1",
        "seq": seq,
        "hash": entry_hash,
        "signed_at": canonical_time(signed_at),
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
