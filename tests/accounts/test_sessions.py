from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from apps.accounts.models import SealedTOTPDevice, User, UserSession
from apps.accounts.sessions import SESSION_LAST_SEEN, SESSION_LOGIN_AT, SESSION_STEP_UP_AT
from apps.audit.models import AuditEntry
from tests.people import PASSWORD, Person, full_login

pytestmark = pytest.mark.django_db


def shift(client: Client, key: str, seconds: float) -> None:
    """Move a session timestamp into the past, as if that much time had passed."""
    session = client.session
    session[key] = float(session[key]) - seconds
    session.save()


def ended_reason(who: Person) -> list[str]:
    return list(UserSession.objects.filter(user=who.user).values_list("end_reason", flat=True))


def test_an_idle_session_ends_after_30_minutes(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, who = logged_in("viewer")
    shift(client, SESSION_LAST_SEEN, 29 * 60)
    assert client.get("/").status_code == 200
    shift(client, SESSION_LAST_SEEN, 31 * 60)
    assert client.get("/")["Location"] == "/accounts/login/"
    assert client.get("/")["Location"].startswith("/accounts/login/")
    assert ended_reason(who) == ["idle"]
    assert AuditEntry.objects.filter(action="session.ended", data__reason="idle").exists()


def test_a_session_ends_after_12_hours_even_when_active(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, who = logged_in("viewer")
    shift(client, SESSION_LOGIN_AT, 12 * 3600 + 1)
    assert client.get("/")["Location"] == "/accounts/login/"
    assert ended_reason(who) == ["absolute"]


def test_a_user_can_end_another_of_their_sessions(person: Callable[..., Person]) -> None:
    alice = person("alice")
    laptop, phone = Client(), Client()
    full_login(laptop, alice, ip="192.0.2.1", steps_ahead=0)
    full_login(phone, alice, ip="192.0.2.2", steps_ahead=1)
    page = laptop.get("/accounts/sessions/").content.decode()
    assert "192.0.2.1" in page and "192.0.2.2" in page and "this session" in page
    assert str(phone.session.session_key) not in page  # session keys are never rendered
    other = UserSession.objects.get(ip="192.0.2.2")
    assert laptop.post(f"/accounts/sessions/{other.pk}/end/")["Location"] == "/accounts/sessions/"
    assert phone.get("/")["Location"].startswith("/accounts/login/")
    assert laptop.get("/").status_code == 200


def test_a_user_cannot_end_someone_elses_session(person: Callable[..., Person]) -> None:
    alice, bob = person("alice"), person("bob")
    alice_client, bob_client = Client(), Client()
    full_login(alice_client, alice)
    full_login(bob_client, bob)
    bobs = UserSession.objects.get(user=bob.user)
    assert alice_client.post(f"/accounts/sessions/{bobs.pk}/end/").status_code == 404
    assert bob_client.get("/").status_code == 200


def test_a_password_change_ends_the_other_sessions(person: Callable[..., Person]) -> None:
    alice = person("alice")
    here, elsewhere = Client(), Client()
    full_login(here, alice, steps_ahead=0)
    full_login(elsewhere, alice, ip="192.0.2.50", steps_ahead=1)
    new = "a different long passphrase 42"
    response = here.post("/accounts/password/", {"old_password": PASSWORD, "new_password1": new, "new_password2": new})
    assert response["Location"] == "/accounts/sessions/"
    assert here.get("/").status_code == 200
    assert elsewhere.get("/")["Location"].startswith("/accounts/login/")
    assert UserSession.objects.get(ip="192.0.2.50").end_reason == "password_changed"
    assert AuditEntry.objects.filter(action="user.password_changed").count() == 1


def test_a_bad_password_change_changes_nothing(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, who = logged_in("viewer")
    response = client.post("/accounts/password/", {"old_password": "wrong", "new_password1": "x", "new_password2": "y"})
    assert response.status_code == 200 and "error" in response.content.decode()
    who.user.refresh_from_db()
    assert who.user.check_password(PASSWORD)
    assert not AuditEntry.objects.filter(action="user.password_changed").exists()


# -- step-up --------------------------------------------------------------------------------


def step_up(client: Client, who: Person, steps_ahead: int = 1) -> None:
    response = client.post("/accounts/step-up/", {"code": who.code(steps_ahead), "next": "/accounts/backup-codes/"})
    assert response["Location"] == "/accounts/backup-codes/", response.content[:300]


def test_a_sensitive_action_asks_for_a_fresh_code(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, who = logged_in("viewer")
    first = client.post("/accounts/backup-codes/regenerate/", HTTP_REFERER="http://testserver/accounts/backup-codes/")
    assert first["Location"] == "/accounts/step-up/?next=%2Faccounts%2Fbackup-codes%2F"
    assert not AuditEntry.objects.filter(action="otp.backup_codes_generated").exists()
    step_up(client, who)
    done = client.post("/accounts/backup-codes/regenerate/")
    assert done.status_code == 200 and done.content.decode().count("<li><code>") == 10
    assert AuditEntry.objects.filter(action="auth.step_up").count() == 1


def test_step_up_expires_after_five_minutes(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, who = logged_in("viewer")
    step_up(client, who)
    shift(client, SESSION_STEP_UP_AT, 4 * 60 + 50)
    assert client.post("/accounts/backup-codes/regenerate/").status_code == 200
    shift(client, SESSION_STEP_UP_AT, 20)
    assert client.post("/accounts/backup-codes/regenerate/")["Location"].startswith("/accounts/step-up/")


def test_step_up_refuses_a_backup_code_and_a_wrong_code(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, _ = logged_in("viewer")
    response = client.post("/accounts/step-up/", {"code": "abcd-efgh-jkmn", "next": "/"})
    assert response.status_code == 200 and "not valid" in response.content.decode()
    assert SESSION_STEP_UP_AT not in client.session
    assert AuditEntry.objects.filter(action="auth.step_up_failed").count() == 1


def test_step_up_does_not_redirect_off_site(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, who = logged_in("viewer")
    response = client.post("/accounts/step-up/", {"code": who.code(1), "next": "https://evil.example/"})
    assert response["Location"] == "/"


# -- admin actions ----------------------------------------------------------------------------


@pytest.fixture
def admin_stepped_up(logged_in: Callable[[str], tuple[Client, Person]]) -> tuple[Client, Person]:
    client, who = logged_in("admin")
    step_up(client, who)
    return client, who


def test_an_admin_changes_a_role_with_an_audited_diff(
    admin_stepped_up: tuple[Client, Person], person: Callable[..., Person]
) -> None:
    client, _ = admin_stepped_up
    bob = person("bob", "viewer")
    client.post(f"/accounts/users/{bob.user.pk}/role/", {"role": "operator"})
    assert list(bob.user.groups.values_list("name", flat=True)) == ["operator"]
    entry = AuditEntry.objects.filter(action="user.role_changed").order_by("-seq").first()
    assert entry is not None and entry.data == {"username": "bob", "before": "viewer", "after": "operator"}
    assert entry.actor == "admin-user" and entry.otp_verified


def test_a_bad_role_changes_nothing(admin_stepped_up: tuple[Client, Person], person: Callable[..., Person]) -> None:
    client, _ = admin_stepped_up
    bob = person("bob", "viewer")
    before = AuditEntry.objects.count()
    response = client.post(f"/accounts/users/{bob.user.pk}/role/", {"role": "superuser"}, follow=True)
    assert "Choose a valid role" in response.content.decode()
    assert list(bob.user.groups.values_list("name", flat=True)) == ["viewer"]
    assert AuditEntry.objects.count() == before


def test_deactivating_a_user_ends_their_sessions(
    admin_stepped_up: tuple[Client, Person], person: Callable[..., Person]
) -> None:
    client, _ = admin_stepped_up
    bob = person("bob", "operator")
    bob_client = Client()
    full_login(bob_client, bob)
    client.post(f"/accounts/users/{bob.user.pk}/deactivate/")
    assert not User.objects.get(pk=bob.user.pk).is_active
    assert bob_client.get("/")["Location"].startswith("/accounts/login/")
    assert Client().post("/accounts/login/", {"username": "bob", "password": PASSWORD}).status_code == 200


def test_an_admin_cannot_deactivate_themselves(admin_stepped_up: tuple[Client, Person]) -> None:
    client, who = admin_stepped_up
    response = client.post(f"/accounts/users/{who.user.pk}/deactivate/", follow=True)
    assert "cannot deactivate your own account" in response.content.decode()
    assert User.objects.get(pk=who.user.pk).is_active


def test_resetting_two_factor_sends_the_user_back_to_enrollment(
    admin_stepped_up: tuple[Client, Person], person: Callable[..., Person]
) -> None:
    client, _ = admin_stepped_up
    bob = person("bob")
    client.post(f"/accounts/users/{bob.user.pk}/reset_otp/")
    assert not SealedTOTPDevice.objects.filter(user=bob.user).exists()
    fresh = Client()
    assert fresh.post("/accounts/login/", {"username": "bob", "password": PASSWORD})["Location"] == "/accounts/enroll/"


def test_an_admin_unlocks_a_locked_user(admin_stepped_up: tuple[Client, Person], person: Callable[..., Person]) -> None:
    client, _ = admin_stepped_up
    bob = person("bob")
    for _ in range(5):
        Client().post("/accounts/login/", {"username": "bob", "password": "wrong"})
    assert Client().post("/accounts/login/", {"username": "bob", "password": PASSWORD}).status_code == 429
    assert "Locked" in client.get("/accounts/users/").content.decode()
    client.post(f"/accounts/users/{bob.user.pk}/unlock/")
    assert Client().post("/accounts/login/", {"username": "bob", "password": PASSWORD}).status_code == 302
    assert AuditEntry.objects.filter(action="user.unlocked").exists()


def test_an_admin_adds_a_user_who_must_enroll(admin_stepped_up: tuple[Client, Person]) -> None:
    client, _ = admin_stepped_up
    response = client.post("/accounts/users/", {"username": "dave", "email": "dave@example.test", "role": "operator"})
    assert response.status_code == 200
    import re

    password = re.search(r'<code class="secret">([^<]+)</code>', response.content.decode())
    assert password
    dave = User.objects.get(username="dave")
    assert dave.check_password(password.group(1)) and dave.groups.get().name == "operator"
    login = Client().post("/accounts/login/", {"username": "dave", "password": password.group(1)})
    assert login["Location"] == "/accounts/enroll/"


def test_adding_a_user_with_bad_input_changes_nothing(admin_stepped_up: tuple[Client, Person]) -> None:
    client, _ = admin_stepped_up
    count = User.objects.count()
    response = client.post("/accounts/users/", {"username": "x y", "email": "not-an-email", "role": "god"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Use 3 to 150 letters" in body and "valid email" in body and "valid choice" in body
    assert User.objects.count() == count
