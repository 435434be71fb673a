"""publish(): validation, masking, and never breaking its caller."""

from __future__ import annotations

import logging
import socket
import time
from decimal import Decimal
from typing import Any

import pytest

from apps.core.exceptions import ApplicationError
from apps.events.models import Event
from apps.events.services import ANNOUNCE_TIMEOUT_S, publish


@pytest.mark.django_db
def test_it_refuses_an_unknown_kind() -> None:
    with pytest.raises(ApplicationError, match="Unknown live event kind 'order_deleted'"):
        publish(kind="order_deleted", data={})
    # Only this kind: a worker of an earlier browser test may still be finishing its last events.
    assert not Event.objects.filter(kind="order_deleted").exists()


@pytest.mark.django_db
def test_it_stores_decimals_as_text_and_masks_anything_named_like_a_secret() -> None:
    event = publish(kind="fill", data={"price": Decimal("60000.5"), "api_secret": "CANARY-123", "note": "token=abc"})
    stored = Event.objects.get(seq=event.seq).payload
    assert stored == event.payload
    assert stored["price"] == "60000.5"
    assert "CANARY-123" not in str(stored) and "abc" not in str(stored)


@pytest.mark.django_db(transaction=True)
def test_redis_being_down_does_not_break_the_caller(settings: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    with caplog.at_level(logging.WARNING, logger="apps.events.services"):
        event = publish(kind="heartbeat", bot_id=None, data={})
    assert Event.objects.filter(seq=event.seq).exists()  # still there for the hubs and catch-up
    assert "not announced" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_after_a_failure_announcements_are_skipped_for_a_while_so_ticks_do_not_wait(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that accepts connections and never answers (a hung Redis): each try waits its timeout.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        settings.REDIS_URL = f"redis://127.0.0.1:{hung.getsockname()[1]}/0"
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="apps.events.services"):
            for _ in range(20):
                publish(kind="heartbeat", bot_id=None, data={"test": "back-off"})
        took = time.monotonic() - started
    # One bounded wait (two tries of ANNOUNCE_TIMEOUT_S), then skipped during the back-off.
    assert ANNOUNCE_TIMEOUT_S <= took < 2 * ANNOUNCE_TIMEOUT_S + 0.5, took
    assert caplog.text.count("not announced") == 20
    assert Event.objects.filter(payload__test="back-off").count() == 20
