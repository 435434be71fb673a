"""Alert webhook: signed deliveries to a real HTTP receiver on loopback, retries, and the secret kept in Vault."""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from apps.alerts import webhook as webhook_services
from apps.alerts.models import Alert, AlertWebhook
from apps.alerts.services import alert_raise
from apps.alerts.webhook import SECRET_PATH, alert_webhook_configure, webhook_deliver_pending
from apps.audit.models import AuditEntry
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_check, exchange_account_create
from apps.killswitch.models import KillRun
from apps.killswitch.tasks import _poll_forever
from apps.vault import client as vault
from tests.harness import Harness
from tests.keys import Key
from tests.leaks import pg_dump, redis_dump
from tests.people import Person, make_person
from tests.receiver import Delivery, Receiver, running_receiver

PAGE = "/alerts/webhook/"
Login = Callable[[str], tuple[Client, Person]]


def new_secret() -> str:
    return "whsec-CANARY-" + secrets.token_hex(16)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
def admin(db: None) -> Person:
    return make_person("ada", "admin")


def set_up(admin: Person, url: str, secret: str, web_vault: vault.ProcessVault) -> AlertWebhook:
    return alert_webhook_configure(url=url, secret=secret, actor=admin.user, process_vault=web_vault)


def stored_secret(root_vault: vault.ProcessVault) -> str | None:
    try:
        return str(root_vault.kv_read(SECRET_PATH)["secret"])
    except vault.VaultError:
        return None


def stepped_up_admin(logged_in: Login) -> Client:
    client, who = logged_in("admin")
    response = client.post("/accounts/step-up/", {"code": who.code(1), "next": PAGE})
    assert response.status_code == 302 and response["Location"] == PAGE
    return client


# -- deliveries -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_lockout_is_posted_signed_to_the_receiver(
    receiver: Receiver, admin: Person, web_vault: vault.ProcessVault, control_vault: vault.ProcessVault
) -> None:
    secret = new_secret()
    set_up(admin, receiver.url, secret, web_vault)
    make_person("alice")
    client = Client()
    codes = [client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code for _ in range(5)]
    assert codes[-1] == 429
    alert = Alert.objects.get(kind="login_locked_out")
    assert alert.webhook_status == Alert.WebhookStatus.PENDING

    before = int(time.time())
    assert webhook_deliver_pending(process_vault=control_vault) == 1
    after = int(time.time())

    (delivery,) = receiver.received
    assert delivery.path == "/hooks/botconsole?team=ops"
    payload = receiver.verify(delivery, secret)
    assert before <= int(delivery.headers["X-Botconsole-Timestamp"]) <= after
    assert payload["id"] == alert.pk and payload["kind"] == "login_locked_out" and payload["severity"] == "warning"
    assert payload["data"]["username"] == "alice" and "alice" in payload["message"]
    assert set(payload) == {"id", "kind", "severity", "message", "created_at", "data"}
    # The signature covers timestamp and body: another secret, a changed body or timestamp fail.
    with pytest.raises(AssertionError):
        receiver.verify(delivery, new_secret())
    with pytest.raises(AssertionError):
        receiver.verify(Delivery(delivery.path, delivery.headers, delivery.body.replace(b"alice", b"alicf")), secret)
    stale = {**delivery.headers, "X-Botconsole-Timestamp": str(before - 3600)}
    with pytest.raises(AssertionError):
        receiver.verify(Delivery(delivery.path, stale, delivery.body), secret)
    alert.refresh_from_db()
    assert alert.webhook_status == Alert.WebhookStatus.SENT and alert.webhook_attempts == 1
    assert alert.webhook_delivered_at is not None and alert.webhook_last_error == ""
    # Delivered once: the next round sends nothing again.
    assert webhook_deliver_pending(process_vault=control_vault) == 0 and len(receiver.received) == 1


@pytest.mark.django_db
def test_a_failed_key_check_is_posted_without_the_api_secret(
    receiver: Receiver,
    admin: Person,
    new_key: Callable[..., Key],
    web_vault: vault.ProcessVault,
    control_vault: vault.ProcessVault,
) -> None:
    secret = new_secret()
    set_up(admin, receiver.url, secret, web_vault)
    key = new_key()
    account, _ = exchange_account_create(
        label="Webhook keys",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    # A key years old is due for rotation: the check reports a problem and raises an alert.
    ExchangeAccount.objects.filter(pk=account.pk).update(rotated_at=account.rotated_at.replace(year=2020))
    account.refresh_from_db()
    problems = exchange_account_check(account=account, process_vault=control_vault)
    assert problems
    assert webhook_deliver_pending(process_vault=control_vault) == 1
    (delivery,) = receiver.received
    payload = receiver.verify(delivery, secret)
    assert payload["kind"] == "key_check_failed" and payload["severity"] == "critical"
    assert payload["data"] == {"account": str(account.id)}
    assert key.secret.encode() not in delivery.body and b"CANARY" not in delivery.body


@pytest.mark.django_db(transaction=True)
def test_the_control_workers_poller_posts_a_kill_alert_by_itself(
    receiver: Receiver, services: Harness, settings: Any, web_vault: vault.ProcessVault
) -> None:
    """The database poller (no broker involved) runs the kill, then posts the kill alert."""
    secret = new_secret()
    set_up(make_person("ada", "admin"), receiver.url, secret, web_vault)
    settings.VAULT_TOKEN = services.tokens["control"].token  # what the control worker runs with
    run = KillRun.objects.create(scope=KillRun.Scope.ALL, reason="webhook drill")
    stop = threading.Event()
    poller = threading.Thread(target=_poll_forever, args=(stop, 0.1), daemon=True)
    poller.start()
    try:
        assert receiver.arrived.wait(timeout=60), "the poller posted nothing"
        alert = Alert.objects.get(kind="kill_switch")
        for _ in range(200):  # the sender saves the outcome right after the receiver answers
            alert.refresh_from_db()
            if alert.webhook_status != Alert.WebhookStatus.PENDING:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        poller.join(timeout=10)
        if webhook_services._sender is not None:
            webhook_services._sender.join(timeout=10)
    payload = receiver.verify(receiver.received[0], secret)
    assert payload["kind"] == "kill_switch" and payload["id"] == alert.pk and "webhook drill" in payload["message"]
    assert alert.webhook_status == Alert.WebhookStatus.SENT
    run.refresh_from_db()
    assert run.status in (KillRun.Status.DONE, KillRun.Status.FAILED)


@pytest.mark.django_db
def test_a_receiver_answering_500_is_retried_then_the_alert_is_marked_failed(
    receiver: Receiver,
    admin: Person,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    web_vault: vault.ProcessVault,
    control_vault: vault.ProcessVault,
) -> None:
    settings.ALERT_WEBHOOK_MAX_ATTEMPTS = 3
    settings.ALERT_WEBHOOK_BACKOFF_S = 0.01
    receiver.status = 500
    secret = new_secret()
    set_up(admin, receiver.url, secret, web_vault)
    alert = alert_raise(kind="breaker_tripped", severity="critical", message="fleet drawdown beyond 5 %")
    for _ in range(500):
        webhook_deliver_pending(process_vault=control_vault)
        alert.refresh_from_db()
        if alert.webhook_status != Alert.WebhookStatus.PENDING:
            break
        time.sleep(0.01)
    assert alert.webhook_status == Alert.WebhookStatus.FAILED
    assert alert.webhook_attempts == 3 and len(receiver.received) == 3
    assert alert.webhook_last_error == "the receiver answered HTTP 500" and alert.webhook_next_at is None
    assert all(receiver.verify(d, secret)["id"] == alert.pk for d in receiver.received)
    assert "failed after 3 attempts" in caplog.text
    # A failed delivery is logged, never raised as another alert (which could only fail the same way).
    assert Alert.objects.count() == 1
    assert webhook_deliver_pending(process_vault=control_vault) == 0 and len(receiver.received) == 3


@pytest.mark.django_db
def test_an_unreachable_receiver_is_retried_later_not_at_once(
    admin: Person, settings: Any, web_vault: vault.ProcessVault, control_vault: vault.ProcessVault
) -> None:
    settings.ALERT_WEBHOOK_BACKOFF_S = 3600  # the retry is due only much later
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    set_up(admin, f"http://127.0.0.1:{port}/hook", new_secret(), web_vault)
    alert = alert_raise(kind="foreign_order", severity="critical", message="an order nobody placed")
    assert webhook_deliver_pending(process_vault=control_vault) == 0
    alert.refresh_from_db()
    assert alert.webhook_status == Alert.WebhookStatus.PENDING and alert.webhook_attempts == 1
    assert alert.webhook_last_error.startswith("could not connect")
    webhook_deliver_pending(process_vault=control_vault)
    alert.refresh_from_db()
    assert alert.webhook_attempts == 1  # backing off


@pytest.mark.django_db
def test_alerts_are_not_posted_while_the_webhook_is_off(
    receiver: Receiver, logged_in: Login, control_vault: vault.ProcessVault
) -> None:
    assert alert_raise(kind="foreign_order", message="before any webhook").webhook_status == "none"
    client = stepped_up_admin(logged_in)
    client.post(PAGE, {"url": receiver.url, "secret": new_secret()})
    waiting = alert_raise(kind="foreign_order", message="raised while on")
    assert waiting.webhook_status == Alert.WebhookStatus.PENDING
    assert client.post(f"{PAGE}disable/")["Location"] == PAGE
    assert AuditEntry.objects.filter(action="alert_webhook.disabled").count() == 1
    assert webhook_deliver_pending(process_vault=control_vault) == 0 and receiver.received == []
    waiting.refresh_from_db()
    assert waiting.webhook_status == Alert.WebhookStatus.NONE and "switched off" in waiting.webhook_last_error
    assert alert_raise(kind="foreign_order", message="raised while off").webhook_status == "none"
    # The test button needs a webhook that is on.
    response = client.post(f"{PAGE}test/", follow=True)
    assert "Set up the webhook first" in response.content.decode()
    assert not Alert.objects.filter(kind="webhook_test").exists()


# -- the settings page -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_admin_sets_the_webhook_and_the_secret_stays_in_vault(
    receiver: Receiver,
    logged_in: Login,
    caplog: pytest.LogCaptureFixture,
    web_vault: vault.ProcessVault,
    control_vault: vault.ProcessVault,
    root_vault: vault.ProcessVault,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = new_secret()
    client = stepped_up_admin(logged_in)
    response = client.post(PAGE, {"url": receiver.url, "secret": secret})
    assert response.status_code == 302 and response["Location"] == PAGE
    config = AlertWebhook.objects.get()
    assert config.url == receiver.url and config.enabled and config.secret_set_at is not None
    assert stored_secret(root_vault) == secret
    entry = AuditEntry.objects.get(action="alert_webhook.configured")
    assert entry.actor == "admin-user" and entry.data["secret_replaced"] is True
    assert entry.data["after"] == {"url": receiver.url, "enabled": True, "secret_set": True}

    page = client.get(PAGE).content.decode()
    assert "Signing secret" in page and f"{config.secret_set_at:%Y-%m-%d}" in page and receiver.url in page
    assert client.post(f"{PAGE}test/")["Location"] == PAGE
    assert AuditEntry.objects.filter(action="alert_webhook.test_requested").count() == 1
    assert webhook_deliver_pending(process_vault=control_vault) == 1
    assert receiver.verify(receiver.received[0], secret)["kind"] == "webhook_test"
    alerts_page = client.get("/alerts/").content.decode()
    assert "webhook_test" in alerts_page and ">sent<" in alerts_page

    # Changing only the URL keeps the secret; a new secret is a new Vault version.
    client.post(PAGE, {"url": receiver.url + "&v=2", "secret": ""})
    assert AlertWebhook.objects.get().url.endswith("&v=2") and stored_secret(root_vault) == secret
    replacement = new_secret()
    client.post(PAGE, {"url": receiver.url, "secret": replacement})
    assert stored_secret(root_vault) == replacement
    assert AlertWebhook.objects.get().secret_version == config.secret_version + 1

    # Nowhere but Vault: not the database, Redis, a page or a log line; the web token cannot read it back.
    pages = "".join(client.get(url).content.decode() for url in (PAGE, "/alerts/", "/"))
    for text in (pg_dump(), redis_dump(), pages, caplog.text):
        assert secret not in text and replacement not in text and "whsec-CANARY" not in text
    with pytest.raises(vault.VaultForbidden):
        web_vault.kv_read(SECRET_PATH)
    assert control_vault.kv_read(SECRET_PATH) == {"secret": replacement}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "secret", "error"),
    [
        ("ftp://example.com/hooks", "s" * 32, "http:// or https://"),
        ("", "s" * 32, "This field is required"),
        ("   ", "s" * 32, "This field is required"),
        ("javascript:alert(1)", "s" * 32, "http:// or https://"),
        ("example.com/hooks", "s" * 32, "http:// or https://"),
        ("https://", "s" * 32, "http:// or https://"),
        ("https://alerts.example.com/hook", "too-short", "at least 16 characters"),
        # Hostile input: each a clear form error, never a 500, never stored.
        ("https://alerts.example.com/\x00hook", "s" * 32, "Null characters are not allowed"),
        ("https://alerts.example.com/" + "a" * 10_000, "s" * 32, "at most 500 characters"),
        ("https://alerts.example.com/\x01hook", "s" * 32, "invisible or control character (U+0001)"),
        ("https://alerts.example.com/\u202ekoohb", "s" * 32, "invisible or control character (U+202E)"),
        ("https://alerts.example.com/hook", "s" * 20 + "\x00", "Null characters are not allowed"),
        ("https://alerts.example.com/hook", "s" * 20 + "\x1b[0m", "invisible or control character (U+001B)"),
        ("https://alerts.example.com/hook", "s" * 10_000, "at most 500 characters"),
    ],
)
def test_bad_input_changes_nothing(
    logged_in: Login, root_vault: vault.ProcessVault, url: str, secret: str, error: str
) -> None:
    client = stepped_up_admin(logged_in)
    good = new_secret()
    client.post(PAGE, {"url": "https://alerts.example.com/hook", "secret": good})
    before = AlertWebhook.objects.values().get()
    entries = AuditEntry.objects.count()

    response = client.post(PAGE, {"url": url, "secret": secret})
    assert response.status_code == 400 and error in response.content.decode()
    assert AlertWebhook.objects.values().get() == before
    assert stored_secret(root_vault) == good
    assert AuditEntry.objects.count() == entries


@pytest.mark.django_db
def test_the_first_setup_needs_a_secret(logged_in: Login, root_vault: vault.ProcessVault) -> None:
    client = stepped_up_admin(logged_in)
    response = client.post(PAGE, {"url": "https://alerts.example.com/hook", "secret": ""})
    assert response.status_code == 400 and "Set a signing secret" in response.content.decode()
    assert not AlertWebhook.objects.exists()


@pytest.mark.django_db
def test_changes_without_a_fresh_code_are_refused(
    logged_in: Login, admin: Person, web_vault: vault.ProcessVault, root_vault: vault.ProcessVault
) -> None:
    set_up(admin, "https://alerts.example.com/hook", (good := new_secret()), web_vault)
    client, _ = logged_in("admin")  # logged in with a code, but no step-up for this
    before = AlertWebhook.objects.values().get()
    entries = AuditEntry.objects.count()
    for path, data in [
        (PAGE, {"url": "https://evil.example/hook", "secret": new_secret()}),
        (f"{PAGE}disable/", {}),
        (f"{PAGE}test/", {}),
    ]:
        response = client.post(path, data)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/step-up/"), path
    assert client.get(PAGE)["Location"].startswith("/accounts/step-up/")
    assert AlertWebhook.objects.values().get() == before and stored_secret(root_vault) == good
    assert AuditEntry.objects.count() == entries and not Alert.objects.exists()


@pytest.mark.django_db
def test_only_admins_may_see_or_change_the_webhook(logged_in: Login, client: Client) -> None:
    for role in ("viewer", "operator"):
        other, who = logged_in(role)
        other.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
        assert other.get(PAGE).status_code == 403
        assert other.post(PAGE, {"url": "https://evil.example/hook", "secret": new_secret()}).status_code == 403
        assert other.post(f"{PAGE}test/").status_code == 403
        assert other.post(f"{PAGE}disable/").status_code == 403
        assert "Alert webhook" not in other.get("/").content.decode()
    anonymous = client.post(PAGE, {"url": "https://evil.example/hook", "secret": new_secret()})
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    assert not AlertWebhook.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="alert_webhook.").exists()
    with pytest.raises(Exception, match="Only an admin"):
        alert_webhook_configure(url="https://evil.example/hook", secret=new_secret(), actor=who.user)


def test_only_the_control_worker_can_read_the_signing_secret(
    web_vault: vault.ProcessVault, control_vault: vault.ProcessVault
) -> None:
    secret = new_secret()
    web_vault.kv_write(SECRET_PATH, {"secret": secret})
    with pytest.raises(vault.VaultForbidden):
        web_vault.kv_read(SECRET_PATH)
    assert control_vault.kv_read(SECRET_PATH) == {"secret": secret}
    with pytest.raises(vault.VaultForbidden):
        control_vault.kv_write(SECRET_PATH, {"secret": new_secret()})
