"""Helpers of the kill-switch tests: hostile reason texts, and a real database failure on demand."""

from __future__ import annotations

import contextlib
import itertools
import unicodedata
from collections.abc import Iterator

from django.db import connection

# What an operator may type or paste as a reason, and what a prober sends.
HOSTILE_REASONS = {
    "nul": "key\x00leak",
    "controls": "\x01\x02\x1b[31mred\x7f\x9b end",
    "rtl-override": "\u202eexe.lavel\u202c reversed",
    "zero-width": "a\u200bb\ufeffc\u2060d",
    "line-breaks": "line1\r\nline2\u2028line3\u2029",
    "10k": "x" * 10_000,
    "10k-with-nul": ("\x00" + "y") * 5_000,
    "empty": "",
    "blank": " \t\n ",
}
_ids = itertools.count(1)


def is_clean(text: str, max_length: int) -> bool:
    """Stored as shown: not empty, no control, format or surrogate character, within the column."""
    return (
        0 < len(text) <= max_length
        and text == text.strip()
        and not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)
    )


@contextlib.contextmanager
def inserts_refused(table: str, when: str = "true") -> Iterator[None]:
    """PostgreSQL itself refuses INSERTs into `table` (for rows matching `when`) inside the block.

    A real failure of the database, provoked with a trigger: no mock stands in for it.
    """
    name = f"test_refuse_{next(_ids)}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION {name}()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")
