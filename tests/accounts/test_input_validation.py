"""Hostile input to the sign-in and user forms: a form error (or a safe default), never a 500."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from axes.models import AccessAttempt, AccessFailureLog
from django.test import Client

from apps.accounts.models import User, UserSession
from apps.audit.models import AuditEntry
from tests.people import PASSWORD, Person, full_login

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]


@pytest.mark.parametrize(
    ("username", "message"),
    [
        ("a" * 10000, "Ensure this value has at most 150 characters (it has 10000)."),
        ("a" * 151, "Ensure this value has at most 150 characters"),
        ("alice\x00", "Null characters are not allowed."),
        ("alice\x1b[0m", "Remove the control character(s) (U+001B)"),
    ],
)
def test_it_refuses_a_hostile_username_at_login_with_a_form_error(
    person: Callable[..., Person], username: str, message: str
) -> None:
    person("alice")
    response = Client().post("/accounts/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 200 and message in response.content.decode()
    # authenticate() never saw it: no lockout bookkeeping and no failed-login entry under it.
    assert not AccessAttempt.objects.exists() and not AccessFailureLog.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="login.").exists()


def test_a_hostile_username_sent_to_the_django_admin_login_is_counted_cut_to_the_column(
    logged_in: LoggedIn,
) -> None:
    """The admin's login form authenticates whatever it gets; axes stores it cut and cleaned."""
    client, _ = logged_in("admin")
    for username in ("b" * 10000, "bob\x1b" + "c" * 300):
        response = client.post("/admin/login/", {"username": username, "password": "x", "otp_token": "1"})
        assert response.status_code < 500
    stored = set(AccessAttempt.objects.values_list("username", flat=True))
    assert stored <= {"b" * 150, "bob" + "c" * 147}
    assert all(len(u) <= 150 for u in AccessFailureLog.objects.values_list("username", flat=True))


def test_the_axes_username_callable_cleans_and_cuts() -> None:
    from django.test import RequestFactory

    from apps.accounts.forms import axes_username

    request = RequestFactory().post("/accounts/login/", {"username": "z\x00" * 400})
    assert axes_username(request, None) == "z" * 150
    assert axes_username(request, {"username": "alice"}) == "alice"
    assert axes_username(None, {"password": "x"}) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"username": "newbie", "email": "a" * 300 + "@example.com"}, "at most 254 characters"),
        ({"username": "newbie", "email": "n\x00@example.com"}, "Null characters are not allowed"),
        ({"username": "new\u202ebie", "email": ""}, "Use 3 to 150 letters"),
        ({"username": "new\x00bie", "email": ""}, "Null characters are not allowed"),
        ({"username": "n" * 10000, "email": ""}, "at most 150 characters"),
        ({"username": "newbie", "email": "", "role": "superuser"}, "Select a valid choice"),
    ],
)
def test_it_refuses_a_hostile_new_user_and_creates_nothing(
    logged_in: LoggedIn, data: dict[str, str], message: str
) -> None:
    client, who = logged_in("admin")
    client.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    users = User.objects.count()
    response = client.post("/accounts/users/", {"role": "viewer", **data})
    assert response.status_code == 400 and message in response.content.decode()
    assert User.objects.count() == users and not AuditEntry.objects.filter(action="user.created").exists()


@pytest.mark.parametrize(
    "next_url",
    ["/bots/\r\nSet-Cookie: x=y", "/\x00", "/audit/\u202e", "//evil.example/", "/" + "a" * 5000],
)
def test_a_hostile_next_falls_back_to_the_dashboard(person: Callable[..., Person], next_url: str) -> None:
    alice = person("alice")
    client = Client()
    page = client.get("/accounts/login/", {"next": next_url}).content.decode()
    assert "Set-Cookie" not in page and "evil.example" not in page
    client.post("/accounts/login/", {"username": "alice", "password": PASSWORD, "next": next_url})
    response = client.post("/accounts/otp/", {"code": alice.code()})
    assert response.status_code == 302 and response["Location"] == "/"
    step_up = client.post("/accounts/step-up/", {"code": alice.code(1), "next": next_url})
    assert step_up.status_code == 302 and step_up["Location"] == "/"


@pytest.mark.parametrize("number", ["99999999999999999999", str(2**63), str(2**31)])
def test_ids_beyond_the_column_are_a_404(logged_in: LoggedIn, number: str) -> None:
    client, who = logged_in("admin")
    client.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    assert client.post(f"/accounts/sessions/{number}/end/").status_code == 404
    assert client.get(f"/accounts/users/{number}/").status_code == 404
    assert client.post(f"/accounts/users/{number}/deactivate/").status_code == 404
    assert UserSession.objects.filter(user=who.user, ended_at__isnull=True).exists()


def test_a_code_with_control_characters_is_a_form_error(person: Callable[..., Person]) -> None:
    alice = person("alice")
    client = Client()
    client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    response = client.post("/accounts/otp/", {"code": "12\x1b3456"})
    assert response.status_code == 200 and "Remove the control character(s) (U+001B)" in response.content.decode()
    full_login(Client(), alice)  # the code form still works with a real code
