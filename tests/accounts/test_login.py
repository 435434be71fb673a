from __future__ import annotations

import base64
import re
from collections.abc import Callable

import pytest
from django.core import mail
from django.test import Client

from apps.accounts.models import BackupCodeDevice, SealedTOTPDevice, UserSession
from apps.audit.models import AuditEntry
from tests.people import PASSWORD, Person, full_login, password_login

pytestmark = pytest.mark.django_db


def actions() -> list[str]:
    return list(AuditEntry.objects.order_by("seq").values_list("action", flat=True))


def test_password_step_leads_to_the_otp_step(person: Callable[..., Person], client: Client) -> None:
    alice = person("alice")
    response = password_login(client, alice)
    assert response.status_code == 302 and response["Location"] == "/accounts/otp/"
    # A password alone opens nothing else.
    assert client.get("/")["Location"] == "/accounts/otp/"


def test_a_user_without_a_device_is_sent_to_enrollment(person: Callable[..., Person], client: Client) -> None:
    bob = person("bob", enrolled=False)
    assert password_login(client, bob)["Location"] == "/accounts/enroll/"
    assert client.get("/accounts/otp/")["Location"] == "/accounts/enroll/"


def test_unknown_user_and_wrong_password_get_the_same_answer(person: Callable[..., Person]) -> None:
    person("alice")
    unknown = Client().post("/accounts/login/", {"username": "nobody", "password": PASSWORD})
    wrong = Client().post("/accounts/login/", {"username": "alice", "password": "not the password"})
    assert unknown.status_code == wrong.status_code == 200

    def error(response: object) -> str:
        match = re.search(r'<p class="error" role="alert">(.*?)</p>', response.content.decode())  # type: ignore[attr-defined]
        assert match, "no error shown"
        return match.group(1)

    assert error(unknown) == error(wrong)
    assert "Please enter a correct username and password" in error(unknown)
    assert actions().count("login.failed") == 2


def test_otp_step_cycles_the_session_key_and_verifies_the_session(
    person: Callable[..., Person], client: Client
) -> None:
    alice = person("alice")
    password_login(client, alice)
    key_before = client.session.session_key
    response = client.post("/accounts/otp/", {"code": alice.code()})
    assert response["Location"] == "/"
    assert client.session.session_key != key_before
    assert client.get("/").status_code == 200
    tracked = UserSession.objects.get(user=alice.user)
    assert tracked.session_key == client.session.session_key and tracked.ip == "127.0.0.1"
    entry = AuditEntry.objects.get(action="login.success")
    assert entry.actor == "alice" and entry.otp_verified and entry.ip == "127.0.0.1"


def test_a_replayed_code_is_refused(person: Callable[..., Person]) -> None:
    alice = person("alice")
    code = alice.code()
    first = Client()
    password_login(first, alice)
    assert first.post("/accounts/otp/", {"code": code})["Location"] == "/"

    second = Client()
    password_login(second, alice)
    response = second.post("/accounts/otp/", {"code": code})
    assert response.status_code == 200
    assert "That code is not valid" in response.content.decode()
    assert second.get("/")["Location"] == "/accounts/otp/"


def test_failures_are_throttled(person: Callable[..., Person], client: Client) -> None:
    alice = person("alice")
    password_login(client, alice)
    client.post("/accounts/otp/", {"code": alice.wrong_code()})
    # Even the right code is refused while django-otp's back-off is running.
    response = client.post("/accounts/otp/", {"code": alice.code()})
    assert "Too many attempts" in response.content.decode()
    assert client.get("/")["Location"] == "/accounts/otp/"


def test_five_otp_failures_lock_out_username_and_ip(person: Callable[..., Person], client: Client) -> None:
    alice = person("alice")
    password_login(client, alice)
    statuses = [client.post("/accounts/otp/", {"code": alice.wrong_code()}).status_code for _ in range(5)]
    assert statuses[:4] == [200, 200, 200, 200]
    assert statuses[4] == 429
    page = client.post("/accounts/otp/", {"code": alice.code()})
    # The password-only session ended with the lockout.
    assert page.status_code == 302
    locked = Client().post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    assert "Try again after" in locked.content.decode()
    assert actions().count("login.otp_failed") == 5
    assert "login.locked_out" in actions()
    assert any("locked" in m.subject for m in mail.outbox) and "alice@example.test" in mail.outbox[-1].to
    # Another IP is not locked out by alice's failures here.
    other_ip = Client().post("/accounts/login/", {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="10.0.0.9")
    assert other_ip.status_code == 302


def test_five_password_failures_lock_out(person: Callable[..., Person]) -> None:
    person("alice")
    client = Client()
    codes = [client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    assert client.post("/accounts/login/", {"username": "alice", "password": PASSWORD}).status_code == 429


def test_a_backup_code_works_once(person: Callable[..., Person]) -> None:
    alice = person("alice")
    device = BackupCodeDevice.objects.create(user=alice.user, name="Backup codes")
    codes = device.replace_codes(10)
    first = Client()
    password_login(first, alice)
    assert first.post("/accounts/otp/", {"code": codes[3]})["Location"] == "/"
    assert "otp.backup_code_used" in actions()

    second = Client()
    password_login(second, alice)
    assert "That code is not valid" in second.post("/accounts/otp/", {"code": codes[3]}).content.decode()
    assert device.remaining() == 9


def test_backup_codes_are_stored_hashed(person: Callable[..., Person]) -> None:
    alice = person("alice")
    device = BackupCodeDevice.objects.create(user=alice.user, name="Backup codes")
    codes = device.replace_codes(10)
    stored = " ".join(f"{c.salt} {c.code_hash}" for c in device.codes.all())
    for code in codes:
        assert code.replace("-", "") not in stored and code not in stored


def test_enrollment_shows_qr_and_key_then_ten_backup_codes(person: Callable[..., Person], client: Client) -> None:
    bob = person("bob", enrolled=False)
    password_login(client, bob)
    page = client.get("/accounts/enroll/").content.decode()
    assert 'id="totp-qr"' in page and "<svg" in page
    device = SealedTOTPDevice.objects.get(user=bob.user, confirmed=False)
    assert device.key.startswith("vault:v1:")  # the database holds ciphertext only
    secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7 ]+)<', page)
    assert secret
    b32 = secret.group(1).replace(" ", "")
    assert base64.b32decode(b32 + "=" * (-len(b32) % 8)) == device.bin_key
    bob.seed = device.bin_key

    done = client.post("/accounts/enroll/", {"code": bob.code(1)})
    assert done.status_code == 200
    assert done.content.decode().count("<li><code>") == 10
    assert client.get("/").status_code == 200
    assert {"otp.enrolled", "otp.backup_codes_generated", "login.success"} <= set(actions())


def test_a_wrong_enrollment_code_is_refused_and_counts_as_a_failure(
    person: Callable[..., Person], client: Client
) -> None:
    bob = person("bob", enrolled=False)
    password_login(client, bob)
    client.get("/accounts/enroll/")
    bob.seed = SealedTOTPDevice.objects.get(user=bob.user).bin_key
    wrong = client.post("/accounts/enroll/", {"code": bob.wrong_code()})
    assert "That code is not valid" in wrong.content.decode()
    throttled = client.post("/accounts/enroll/", {"code": bob.code()})
    assert "Too many attempts" in throttled.content.decode()
    assert not SealedTOTPDevice.objects.get(user=bob.user).confirmed
    assert actions().count("login.otp_failed") == 2


def test_a_login_from_a_new_ip_sends_an_email(person: Callable[..., Person]) -> None:
    alice = person("alice")
    # Each login needs a later code than the one before (a code never works twice): the next one.
    full_login(Client(), alice, ip="192.0.2.10", steps_ahead=0)
    assert mail.outbox == []  # the very first login is not "new"
    full_login(Client(), alice, ip="192.0.2.10", steps_ahead=1)
    assert mail.outbox == []
    full_login(Client(), alice, ip="198.51.100.7", steps_ahead=1)
    assert len(mail.outbox) == 1 and "198.51.100.7" in mail.outbox[0].body


def test_logout_ends_the_tracked_session(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, who = logged_in("viewer")
    assert client.post("/accounts/logout/")["Location"] == "/accounts/login/"
    assert UserSession.objects.get(user=who.user).end_reason == "logout"
    assert client.get("/")["Location"].startswith("/accounts/login/")
    assert "session.ended" in actions()
