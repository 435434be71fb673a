from __future__ import annotations

import pytest
from django.test import Client

from tests.people import Person, full_login, make_person


@pytest.fixture
def admin_client(db: None) -> tuple[Client, Person]:
    """A logged-in admin who has just passed step-up."""
    who = make_person("exchange-admin", "admin")
    client = Client()
    full_login(client, who)
    response = client.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    assert response["Location"] == "/"
    return client, who
