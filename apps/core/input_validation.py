"""Checks for what a request brings (form fields, query parameters), before any of it is used.

PostgreSQL refuses a NUL byte in text and a number beyond its column, and either would surface as
an error page; control and bidirectional-override characters are refused because they hide or
reorder what a reader (or the audit log's reader) sees. Every refusal here carries a message to show.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

BIGINT_MAX = 2**63 - 1  # PostgreSQL bigint (every id column, the audit and event sequences)
INT_MAX = 2**31 - 1  # PostgreSQL integer
# C0 controls, DEL and C1 controls. Tab, line feed and carriage return are allowed only in multi-line text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): they make a name
# read differently from what it is ("Trojan Source").
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_PLAIN_INT = re.compile(r"-?[0-9]+")


class InputError(ValueError):
    """A request parameter that cannot be used; `message` says why (shown with a 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _codepoints(found: list[str]) -> str:
    return ", ".join(dict.fromkeys(f"U+{ord(ch):04X}" for ch in found))


@deconstructible
class NoControlCharacters:
    """Refuse control characters (NUL and the rest); `multiline` allows tab and line breaks."""

    def __init__(self, multiline: bool = False) -> None:
        self.multiline = multiline

    def __call__(self, value: Any) -> None:
        found = (_CONTROL_MULTILINE if self.multiline else _CONTROL).findall(str(value))
        if found:
            raise ValidationError(
                f"Remove the control character(s) ({_codepoints(found)}): they are not allowed here.",
                code="control_characters",
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoControlCharacters) and other.multiline == self.multiline

    def __hash__(self) -> int:
        return hash(("NoControlCharacters", self.multiline))


@deconstructible
class NoBidiControls:
    """Refuse the characters that reverse or isolate the direction of text (used in names)."""

    def __call__(self, value: Any) -> None:
        found = _BIDI.findall(str(value))
        if found:
            raise ValidationError(
                f"Remove the text-direction control character(s) ({_codepoints(found)}): they make a name "
                "read differently from what it is.",
                code="bidi_controls",
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoBidiControls)

    def __hash__(self) -> int:
        return hash("NoBidiControls")


def has_control_characters(text: str) -> bool:
    return bool(_CONTROL.search(text) or _BIDI.search(text))


class TextField(forms.CharField):
    """A CharField that refuses control characters (all of them on one line; all but tab and line
    breaks when `multiline`) and, for names, bidirectional controls. Give it the column's max_length."""

    def __init__(self, *, multiline: bool = False, name: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.append(NoControlCharacters(multiline=multiline))
        if name:
            self.validators.append(NoBidiControls())


def _plain(number: Decimal | int | None) -> str:
    return format(number, "f") if isinstance(number, Decimal) else str(number)  # 0.00000001, not 1E-8


def _range_message(lo_: Decimal | int | None, hi_: Decimal | int | None, lo_exclusive: bool, unit: str) -> str:
    lo, hi = (None if lo_ is None else _plain(lo_)), (None if hi_ is None else _plain(hi_))
    if lo is not None and hi is not None:
        text = f"Enter a value between {lo} and {hi}{unit}"
        return text + (f" ({lo} itself is not allowed)." if lo_exclusive else ".")
    if lo is not None:
        return f"Enter a value above {lo}{unit}." if lo_exclusive else f"Enter a value of at least {lo}{unit}."
    return f"Enter a value of at most {hi}{unit}."


class PlainDecimalField(forms.DecimalField):
    """A decimal typed as digits with at most one point: no exponent ("1e13"), NaN, Infinity or
    spaces inside, bounded to a business range (`lo`..`hi`, `lo_exclusive` for "more than")
    and to its column (max_digits / decimal_places)."""

    def __init__(
        self,
        *,
        lo: Decimal | None = None,
        hi: Decimal | None = None,
        lo_exclusive: bool = False,
        unit: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lo, self.hi, self.lo_exclusive, self.unit = lo, hi, lo_exclusive, unit

    def to_python(self, value: Any) -> Decimal | None:  # type: ignore[override]  # the stubs see an IntegerField
        if value in self.empty_values:
            return None
        text = str(value).strip()
        if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(text):
            raise ValidationError(
                "Enter a plain number such as 12.5: digits and one decimal point, no exponent, NaN or Infinity.",
                code="invalid",
            )
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValidationError("Enter a number.", code="invalid") from None
        if not number.is_finite():
            raise ValidationError("Enter a finite number.", code="invalid")
        return number

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value is None:
            return
        negative_zero = isinstance(value, Decimal) and value.is_zero() and value.is_signed()
        too_low = self.lo is not None and (value <= self.lo if self.lo_exclusive else value < self.lo)
        too_high = self.hi is not None and value > self.hi
        if too_low or too_high or (negative_zero and self.lo is not None and self.lo >= 0):
            raise ValidationError(_range_message(self.lo, self.hi, self.lo_exclusive, self.unit), code="range")


class PlainIntegerField(forms.IntegerField):
    """A whole number typed as digits only, within `lo`..`hi` (which must fit the column)."""

    def __init__(self, *, lo: int, hi: int, unit: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lo, self.hi, self.unit = lo, hi, unit

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if not _PLAIN_INT.fullmatch(text) or len(text) > 20:
            raise ValidationError(
                f"Enter a whole number (digits only) between {self.lo} and {self.hi}{self.unit}.", code="invalid"
            )
        return int(text)

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value is not None and not self.lo <= value <= self.hi:
            raise ValidationError(_range_message(self.lo, self.hi, False, self.unit), code="range")


def parse_id(raw: str | None, *, name: str, lo: int = 1, hi: int = BIGINT_MAX, required: bool = True) -> int | None:
    """A query or form parameter that must be an id (or a sequence number): digits only, within a bigint.

    Raises InputError with a message naming the parameter; None when it is absent and not required.
    """
    if raw is None or raw == "":
        if required:
            raise InputError(f"`{name}` is missing.")
        return None
    if not re.fullmatch(r"[0-9]{1,19}", raw) or not lo <= int(raw) <= hi:
        raise InputError(f"`{name}` must be a whole number from {lo} to {hi} (digits only).")
    return int(raw)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def parse_uuid(raw: str | None, *, name: str, required: bool = True) -> uuid.UUID | None:
    """A query or form parameter that must be a UUID written the usual way (8-4-4-4-12 hexadecimal digits).

    Raises InputError with a message naming the parameter; None when it is absent and not required.
    """
    if raw is None or raw == "":
        if required:
            raise InputError(f"`{name}` is missing.")
        return None
    if not _UUID.fullmatch(raw):
        raise InputError(f"`{name}` must be an id such as 0b5cad1e-… (8-4-4-4-12 hexadecimal digits).")
    return uuid.UUID(raw)
