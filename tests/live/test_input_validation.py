"""GET /live/events/ with hostile `after` and `bot`: a 400 naming the parameter, never a 500."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from tests.people import Person

URL = "/live/events/"
Login = Callable[[str], tuple[Client, Person]]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"after": "\u00b2"}, "`after` must be"),  # superscript two: a digit to str.isdigit(), not to int()
        ({"after": "\u0663"}, "`after` must be"),  # Arabic-Indic three
        ({"after": "9" * 30}, "`after` must be"),
        ({"after": str(2**63)}, "`after` must be"),
        ({"after": "1e3"}, "`after` must be"),
        ({"after": "0\x00"}, "`after` must be"),
        ({"after": "0", "bot": "abc"}, "`bot` must be a bot id"),
        ({"after": "0", "bot": "1 OR 1=1"}, "`bot` must be a bot id"),
        ({"after": "0", "bot": "\u00b9"}, "`bot` must be a bot id"),
        ({"after": "0", "bot": "9" * 30}, "`bot` must be a bot id"),
        ({"after": "0", "bot": "-1"}, "`bot` must be a bot id"),
        ({"after": "0", "bot": "0"}, "`bot` must be a bot id"),
    ],
)
def test_it_refuses_hostile_catch_up_parameters(logged_in: Login, query: dict[str, str], message: str) -> None:
    client, _ = logged_in("viewer")
    response = client.get(URL, query)
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.django_db
def test_the_largest_sequence_number_is_still_an_answer(logged_in: Login) -> None:
    client, _ = logged_in("viewer")
    response = client.get(URL, {"after": str(2**63 - 1)})
    assert response.status_code == 200 and response.json() == {"events": [], "last": 2**63 - 1}
