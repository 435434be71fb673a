"""The log filter sees every request line that answers 4xx (Django logs "Not Found: <path>"), so an
anonymous client chooses its input. Its patterns must mask as before on long input, and stay linear:
they start only where a run of name characters starts (before, a 20,000-character path cost about
25 s of CPU in one log line; measured, not asserted, as tests here never time anything)."""

from __future__ import annotations

import logging

import pytest

from apps.core.logging import MASK, RedactingFilter, redact_text

LONG = 20_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Not Found: /reviews/day/" + "x" * LONG + "/", "Not Found: /reviews/day/" + "x" * LONG + "/"),
        ("a" * LONG + "_secret=abc rest", "a" * LONG + f"_secret={MASK} rest"),
        ("http" * LONG + "://user:pw@host", "http" * LONG + f"://user:{MASK}@host"),  # pragma: allowlist secret
        ("x." * LONG + " token: s.ABCDEFGHIJKLMNOPQRSTUVWX", "x." * LONG + f" token: {MASK}"),
        ("-" * LONG + "api-key=v", "-" * LONG + f"api-key={MASK}"),
    ],
)
def test_it_masks_secrets_after_long_runs_of_name_characters(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_a_long_request_line_goes_through_the_filter_intact() -> None:
    record = logging.makeLogRecord({"msg": "Not Found: %s", "args": ("/" + "y" * LONG,), "levelno": logging.WARNING})
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "Not Found: /" + "y" * LONG
