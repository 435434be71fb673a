"""Reason texts of safety actions: cleaned for a kill (never a reason to refuse), checked for a resume.

A kill's reason is whatever a stressed operator typed, or pasted: a halt must commit whatever it is.
So it is cleaned, not refused: control characters (NUL included, which PostgreSQL refuses) and line
breaks become spaces, invisible format characters (bidirectional overrides, zero-width characters)
are removed so that the report shows what was typed, unpaired surrogates (from undecodable bytes on
a command line) become U+FFFD, runs of spaces collapse, and the text is cut to the column. An empty
reason becomes NO_REASON.

A resume loosens risk, so its reason is checked instead: the admin gets a clear error and nothing
changes (resume_reason_problem).
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

NO_REASON = "(no reason given)"
RESUME_REASON_MAX = 500
# Characters that are not Cc/Cf but still break a line or read as whitespace.
_AS_SPACE = {"\u2028", "\u2029", "\u0085"}


def _category(char: str) -> str:
    return unicodedata.category(char)


def reason_clean(text: object, *, max_length: int, fallback: str = NO_REASON) -> str:
    """`text` made safe to store and show: never raises, never empty, at most `max_length` characters."""
    raw = text if isinstance(text, str) else ("" if text is None else str(text))
    out: list[str] = []
    for char in raw:
        category = _category(char)
        if category == "Cc" or char in _AS_SPACE or category in ("Zl", "Zp"):
            out.append(" ")
        elif category == "Cf":
            continue  # bidi overrides, zero-width joiners, BOM: invisible, and able to disguise the text
        elif category == "Cs":
            out.append("\ufffd")
        else:
            out.append(char)
    cleaned = " ".join("".join(out).split())
    if not cleaned:
        cleaned = fallback
    return cleaned[:max_length].rstrip() or fallback[:max_length]


def reason_changed(text: object, cleaned: str) -> bool:
    """Whether cleaning changed the text (beyond trimming spaces at the ends): noted in the audit entry."""
    return not isinstance(text, str) or " ".join(text.split()) != cleaned


def resume_reason_problem(text: str) -> str | None:
    """Why a resume's reason cannot be accepted as typed, or None when it can."""
    stripped = text.strip()
    if not stripped:
        return "Write down why it is safe to resume; it goes into the audit log."
    if len(stripped) > RESUME_REASON_MAX:
        return f"Keep the reason under {RESUME_REASON_MAX} characters (it has {len(stripped)})."
    for char in stripped:
        category = _category(char)
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp") and char not in "\t":
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            return (
                f"The reason contains an invisible or control character ({name}); type it again as plain text. "
                "Nothing was changed."
            )
    return None


def json_safe(data: dict[str, Any]) -> dict[str, Any]:
    """`data` as plain JSON (Decimals and dates as text), for a JSON field that is shown as written."""
    plain: dict[str, Any] = json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    return plain
