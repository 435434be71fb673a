"""The dashboard shows every kind of kill-switch event it stored, whatever fields the event carries."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from apps.events.services import publish
from tests.people import Person

pytestmark = pytest.mark.django_db


def test_the_dashboard_renders_kill_events_with_a_result_a_step_or_neither(
    logged_in: Callable[[str], tuple[Client, Person]],
) -> None:
    publish(kind="kill_switch", data={"stage": "finished", "message": "Kill switch done in 3.1 s — 8 orders cancelled"})
    publish(kind="kill_switch", data={"stage": "step", "step": "cancel", "detail": "8 orders cancelled"})
    publish(kind="kill_switch", data={"stage": "started"})
    client, _ = logged_in("viewer")
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Kill switch done in 3.1 s — 8 orders cancelled" in page
    assert "Kill switch: Cancel orders on the exchanges: 8 orders cancelled" in page and "Kill switch started" in page
