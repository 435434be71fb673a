"""A review as CSV (one block per section) or JSON (the review itself, its digest, its sign-offs)."""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any

from apps.reviews.figures import when
from apps.reviews.selectors import SignoffView

# The columns of each section, in the order the page shows them. Every row of a section has
# exactly these keys (the CSV writer refuses any other), so the CSV says what the JSON says.
COLUMNS: dict[str, tuple[str, ...]] = {
    "trades": (
        "mode",
        "bot",
        "bot_id",
        "symbol",
        "base",
        "quote",
        "orders",
        "fills",
        "buys",
        "sells",
        "bought",
        "sold",
        "buy_value",
        "sell_value",
        "fees",
        "realized_pnl",
    ),
    "pnl": ("mode", "bot", "bot_id", "quote", "fills", "fees", "realized_pnl"),
    "pnl_totals": ("mode", "quote", "fills", "fees", "realized_pnl"),
    "balances": (
        "account",
        "account_id",
        "exchange",
        "status",
        "opening_at",
        "closing_at",
        "fills",
        "asset",
        "opening",
        "trades",
        "expected",
        "actual",
        "difference",
        "explained",
    ),
    "fund_movements": ("account", "asset", "amount", "direction", "source", "from", "to"),
    "gate_refusals": ("bot", "bot_id", "reason", "reason_label", "count", "first", "last"),
    "breakers": ("at", "source", "subject", "action", "message", "cleared_at"),
    "foreign_orders": ("at", "account", "symbol", "side", "amount", "price", "exchange_order_id", "message"),
    "kills": ("id", "at", "scope", "bot", "reason", "requested_by", "status", "cancelled", "still_open"),
    "new_ip_logins": ("seq", "at", "user", "ip"),
    "failed_logins": ("action", "username", "count", "addresses", "first", "last"),
    "lockouts": ("seq", "at", "username", "ip"),
    "key_check_failures": ("at", "account", "message"),
    "deadman_failures": ("at", "severity", "message"),
    "other_alerts": ("at", "kind", "severity", "message"),
}
# Cells a spreadsheet would run as a formula get a leading ' (numbers, negative ones included, do not).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def balance_rows(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The balance checks flattened: one row per account and asset (one per account without assets)."""
    rows: list[dict[str, Any]] = []
    for check in checks:
        head = {
            "account": check["account"],
            "account_id": check["account_id"],
            "exchange": check["exchange"],
            "status": check["status"],
            "opening_at": (check["opening"] or {}).get("taken_at"),
            "closing_at": (check["closing"] or {}).get("taken_at"),
            "fills": check["fills"],
        }
        blank = dict.fromkeys(("asset", "opening", "trades", "expected", "actual", "difference", "explained"), "")
        rows.extend({**head, **asset} for asset in check["assets"])
        if not check["assets"]:
            rows.append({**head, **blank})
    return rows


def sections(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(name, rows) for every section of the review, in page order."""
    return [
        ("trades", data["trades"]),
        ("pnl", data["pnl"]),
        ("pnl_totals", data["pnl_totals"]),
        ("balances", balance_rows(data["balances"])),
        ("fund_movements", data["fund_movements"]),
        *data["events"].items(),
    ]


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not NUMBER.match(value):
        return "'" + value
    return value


def review_csv(data: dict[str, Any], digest: str) -> str:
    """Each section as a header row and its rows, every row led by the section's name; a blank line between."""
    out = io.StringIO()
    writer = csv.writer(out)
    period = data["period"]
    writer.writerow(["review", "kind", "period", "start", "end", "digest"])
    writer.writerow(["review", period["kind"], period["key"], period["start"], period["end"], digest])
    for name, rows in sections(data):
        columns = COLUMNS[name]
        writer.writerow([])
        writer.writerow([name, *columns])
        for row in rows:
            if set(row) != set(columns):
                raise ValueError(f"section {name}: row keys {sorted(row)} are not its columns")
            writer.writerow([name, *(_cell(row[c]) for c in columns)])
    return out.getvalue()


def review_json(data: dict[str, Any], digest: str, signoffs: list[SignoffView], exported_at: str) -> str:
    """`review` is what `digest` covers: SHA-256 of json.dumps(review, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False) in UTF-8."""
    document = {
        "review": data,
        "digest": digest,
        "digest_of": "sha256 of the canonical JSON of `review` (sorted keys, no spaces, UTF-8)",
        "exported_at": exported_at,
        "signoffs": [
            {
                "by": v.signoff.signed_by.username,
                "at": when(v.signoff.signed_at),
                "note": v.signoff.note,
                "digest": v.signoff.digest,
                "audit_seq": v.signoff.audit_seq,
                "current": v.current,
                "audit_matches": v.audit_matches,
            }
            for v in signoffs
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
