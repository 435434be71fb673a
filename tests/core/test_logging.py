from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

CANARY = "CANARY-9f8e7d6c5b4a"


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """Point the configured console handler (with its filters, as settings.LOGGING built it) at a buffer."""
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler))
    buffer = io.StringIO()
    old = handler.setStream(buffer)
    yield buffer
    handler.setStream(old)


@pytest.mark.parametrize(
    ("message", "args"),
    [
        ("account %s", ({"apiKey": "k", "secret": CANARY},)),
        ("creds %(api_key)s", {"api_key": CANARY}),
        ("connecting with api_key=%s", (CANARY,)),
        ('payload {"password": "%s"}', (CANARY,)),
        ("broker redis://:%s@127.0.0.1:6379/0", (CANARY,)),
        ("vault token s.%s", (CANARY + "abcdefghijklmnop",)),
    ],
)
def test_a_canary_secret_never_reaches_the_log(console: io.StringIO, message: str, args: Any) -> None:
    logger = logging.getLogger("botconsole.test")
    logger.warning(message, *(args if isinstance(args, tuple) else (args,)))
    output = console.getvalue()
    assert output, "nothing was logged: the test would prove nothing"
    assert CANARY not in output
    assert "********" in output


@pytest.mark.parametrize("extra", [{"token": CANARY}, {"body": {"otp_seed": CANARY}}, {"note": f"secret={CANARY}"}])
def test_a_canary_in_extra_fields_is_masked_before_any_formatter_sees_it(extra: dict[str, object]) -> None:
    # A JSON formatter would print every extra attribute, so check the record the handler passes on.
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler))
    record = logging.getLogger("botconsole.test").makeRecord(
        "botconsole.test", logging.WARNING, __file__, 1, "event", (), None, extra=extra
    )
    assert CANARY in repr(vars(record))
    assert handler.filter(record)
    assert CANARY not in repr(vars(record))


def test_a_canary_in_an_exception_is_masked(console: io.StringIO) -> None:
    try:
        raise RuntimeError(f"failed with secret={CANARY}")
    except RuntimeError:
        logging.getLogger("botconsole.test").exception("boom")
    assert "boom" in console.getvalue()
    assert CANARY not in console.getvalue()


def test_every_configured_handler_carries_the_redaction_filter() -> None:
    from django.conf import settings

    logging_config: dict[str, Any] = settings.LOGGING
    handlers: dict[str, dict[str, Any]] = logging_config["handlers"]
    for name, handler in handlers.items():
        assert "redact" in handler.get("filters", []), name
