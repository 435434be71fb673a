"""GET /live/events/?after=<seq>[&bot=<id>]: what a page missed, filtered like the socket."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from apps.bots.models import Bot
from apps.events.services import publish
from tests.people import Person, password_login

Login = Callable[[str], tuple[Client, Person]]
URL = reverse("live:events")


@pytest.fixture
def events(make_bot: Callable[[str], Bot]) -> dict[str, int]:
    bot, other = make_bot("catch-up"), make_bot("catch-up-other")
    seqs = {
        "before": publish(kind="heartbeat", bot_id=bot.pk, data={}).seq,
        "order": publish(kind="order_new", bot_id=bot.pk, data={"id": 1}).seq,
        "admin_alert": publish(kind="alert", data={"kind": "foreign_order", "audience": "admin"}).seq,
        "other_fill": publish(kind="fill", bot_id=other.pk, data={"order": 2}).seq,
        "alert": publish(kind="alert", data={"kind": "daily_loss", "audience": "all"}).seq,
    }
    return {**seqs, "bot": bot.pk}


@pytest.mark.django_db
def test_it_returns_exactly_the_events_after_the_cursor_that_a_viewer_may_see(
    logged_in: Login, events: dict[str, int]
) -> None:
    client, _ = logged_in("viewer")
    body = client.get(URL, {"after": events["before"]}).json()
    assert [e["seq"] for e in body["events"]] == [events["order"], events["other_fill"], events["alert"]]
    assert body["last"] == events["alert"]
    first = body["events"][0]
    assert set(first) == {"seq", "kind", "bot", "at", "data"}
    assert (first["kind"], first["bot"], first["data"]) == ("order_new", events["bot"], {"id": 1})


@pytest.mark.django_db
def test_an_admin_also_gets_admin_alerts_and_bot_narrows_to_one_bot(logged_in: Login, events: dict[str, int]) -> None:
    client, _ = logged_in("admin")
    body = client.get(URL, {"after": events["before"]}).json()
    assert [e["seq"] for e in body["events"]] == [
        events["order"],
        events["admin_alert"],
        events["other_fill"],
        events["alert"],
    ]
    one_bot = client.get(URL, {"after": 0, "bot": events["bot"]}).json()
    assert [e["seq"] for e in one_bot["events"]] == [events["before"], events["order"]]


@pytest.mark.django_db
def test_nothing_new_keeps_the_cursor(logged_in: Login, events: dict[str, int]) -> None:
    client, _ = logged_in("viewer")
    assert client.get(URL, {"after": events["alert"]}).json() == {"events": [], "last": events["alert"]}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ({"after": "abc"}, 400, "`after` must be"),
        ({"after": "-1"}, 400, "`after` must be"),
        ({"after": "0", "bot": "x"}, 400, "`bot` must be"),
        ({"after": "0", "bot": "999999999"}, 404, "No such bot"),
    ],
)
def test_it_answers_bad_input_with_a_clear_error(
    logged_in: Login, query: dict[str, str], status: int, message: str
) -> None:
    client, _ = logged_in("viewer")
    response = client.get(URL, query)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.django_db
def test_anonymous_and_password_only_sessions_get_no_events(
    person: Callable[..., Person], events: dict[str, int]
) -> None:
    anonymous = Client().get(URL, {"after": 0})
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("accounts:login"))
    half = Client()
    password_login(half, person("half", "admin"))
    response = half.get(URL, {"after": 0})
    assert response.status_code == 302 and response["Location"] == reverse("accounts:otp")
