from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.alerts.models import Alert
from apps.audit.models import AuditEntry
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import (
    NO_IP_WARNING,
    WITHDRAW_REFUSAL,
    exchange_account_check,
    exchange_account_create,
    exchange_accounts_hygiene,
)
from apps.vault import client as vault
from tests.keys import Key
from tests.leaks import pg_dump, redis_dump
from tests.people import Person, full_login, make_person

pytestmark = pytest.mark.django_db
ADD = "/exchange-accounts/add/"


def add(client: Client, key: Key, label: str = "Main", **extra: str) -> Any:
    return client.post(ADD, {"label": label, "exchange_id": "sandbox", **key.form(**extra)})


def stored_paths(root_vault: vault.ProcessVault) -> list[str]:
    return root_vault.kv_list("exchange-accounts")


@pytest.mark.django_db(transaction=True)
def test_a_canary_secret_is_stored_in_vault_and_nowhere_else(
    new_key: Callable[..., Key],
    root_vault: vault.ProcessVault,
    control_vault: vault.ProcessVault,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    who = make_person("canary-admin", "admin")
    client = Client()
    full_login(client, who)
    client.post("/accounts/step-up/", {"code": who.code(1), "next": "/"})
    key = new_key(ip_restrict=True)
    caplog.set_level(logging.DEBUG)

    response = add(client, key)
    assert response.status_code == 302, response.content.decode()[:3000]
    account = ExchangeAccount.objects.get(label="Main")
    assert account.key_fingerprint == key.api_key[-4:] and account.withdrawals == "disabled"
    listing = client.get("/exchange-accounts/")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/exchange-accounts/{account.id}/check/")

    # In Vault: the control token reads it back exactly.
    assert control_vault.kv_read(account.vault_path) == {"apiKey": key.api_key, "secret": key.secret}
    # Nowhere else: not the database, the logs, the pages, the Celery message or any Redis key.
    assert key.secret not in pg_dump()
    assert key.secret not in caplog.text and "CANARY" not in caplog.text
    assert key.secret not in response.content.decode() + listing.content.decode()
    broker = redis_dump()
    assert str(account.id) in broker  # the queued check really is in Redis ...
    assert key.secret not in broker and key.api_key not in broker  # ... carrying only the account id
    assert not any(key.secret in json.dumps(e.data) for e in AuditEntry.objects.all())


def test_the_check_task_message_carries_only_the_account_id(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key], django_capture_on_commit_callbacks: Any
) -> None:
    client, _ = admin_client
    assert add(client, new_key()).status_code == 302
    account = ExchangeAccount.objects.get()
    r = redis.Redis.from_url(settings.REDIS_URL)
    r.delete("control")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/exchange-accounts/{account.id}/check/")
    messages = [json.loads(m) for m in r.lrange("control", 0, -1)]
    r.delete("control")
    assert len(messages) == 1
    assert messages[0]["headers"]["task"] == "apps.exchanges.tasks.exchange_account_check_task"
    assert messages[0]["content-type"] == "application/json"
    assert json.loads(base64.b64decode(messages[0]["body"]))[0] == [str(account.id)]


def test_the_web_token_cannot_read_the_secret_it_wrote(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key], web_vault: vault.ProcessVault
) -> None:
    client, _ = admin_client
    add(client, new_key())
    account = ExchangeAccount.objects.get()
    with pytest.raises(vault.VaultForbidden):
        web_vault.kv_read(account.vault_path)


def test_a_key_that_can_withdraw_is_refused_and_nothing_is_stored(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key], root_vault: vault.ProcessVault
) -> None:
    client, _ = admin_client
    before = stored_paths(root_vault)
    key = new_key(can_withdraw=True)
    response = add(client, key)
    assert response.status_code == 400
    body = response.content.decode()
    assert "This key can withdraw funds, so it was not saved" in body and "Enable Withdrawals" in body
    assert key.secret not in body and key.api_key not in body  # write-only fields, even after an error
    assert not ExchangeAccount.objects.exists()
    assert stored_paths(root_vault) == before
    assert not AuditEntry.objects.filter(action="exchange_account.created").exists()
    assert WITHDRAW_REFUSAL.startswith("This key can withdraw")


def test_a_wrong_secret_is_refused_with_the_exchanges_reason(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key], root_vault: vault.ProcessVault
) -> None:
    client, _ = admin_client
    before = stored_paths(root_vault)
    key = new_key()
    response = add(client, Key(key.api_key, key.secret[:-1] + "x"))
    assert response.status_code == 400
    body = response.content.decode()
    assert "The exchange rejected the key" in body and "Signature for this request is not valid" in body
    assert "Nothing was saved" in body
    assert not ExchangeAccount.objects.exists() and stored_paths(root_vault) == before


def test_a_key_that_cannot_trade_is_refused(admin_client: tuple[Client, Person], new_key: Callable[..., Key]) -> None:
    client, _ = admin_client
    response = add(client, new_key(can_trade=False))
    assert response.status_code == 400 and "This key cannot trade" in response.content.decode()
    assert not ExchangeAccount.objects.exists()


def test_a_key_without_ip_restriction_is_accepted_with_a_warning(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key]
) -> None:
    client, _ = admin_client
    response = add(client, new_key(ip_restrict=False))
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "This key is not restricted to your server" in page and "no IP limit" in page
    assert NO_IP_WARNING.startswith("This key is not restricted to your server")
    assert ExchangeAccount.objects.get().ip_restricted is False


def test_one_key_cannot_back_two_accounts(admin_client: tuple[Client, Person], new_key: Callable[..., Key]) -> None:
    client, _ = admin_client
    key = new_key()
    assert add(client, key, label="One").status_code == 302
    response = add(client, key, label="Two")
    assert response.status_code == 400 and "already used by another account" in response.content.decode()
    assert ExchangeAccount.objects.count() == 1


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"label": "", "exchange_id": "sandbox", "apiKey": "k", "secret": "s"}, "This field is required"),
        ({"label": "X", "exchange_id": "no-such-exchange", "apiKey": "k", "secret": "s"}, "Select a valid choice"),
        ({"label": "X", "exchange_id": "sandbox", "apiKey": "k"}, "This field is required"),
        ({"label": "X", "exchange_id": "kucoin", "apiKey": "k", "secret": "s"}, "This exchange needs: password"),
    ],
)
def test_bad_input_gets_a_clear_error_and_changes_nothing(
    admin_client: tuple[Client, Person], sandbox_url: str, data: dict[str, str], error: str
) -> None:
    client, _ = admin_client
    audit_before = AuditEntry.objects.count()
    response = client.post(ADD, data)
    assert response.status_code == 400 and error in response.content.decode()
    assert not ExchangeAccount.objects.exists() and AuditEntry.objects.count() == audit_before


def test_rotation_writes_a_new_vault_version(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key], control_vault: vault.ProcessVault
) -> None:
    client, _ = admin_client
    add(client, new_key())
    account = ExchangeAccount.objects.get()
    fresh = new_key()
    response = client.post(f"/exchange-accounts/{account.id}/rotate/", fresh.form())
    assert response.status_code == 302, response.content.decode()[:2000]
    account.refresh_from_db()
    assert account.kv_version == 2 and account.key_fingerprint == fresh.api_key[-4:]
    assert control_vault.kv_read(account.vault_path)["secret"] == fresh.secret
    entry = AuditEntry.objects.get(action="exchange_account.rotated")
    assert entry.data["after"] == {"fingerprint": fresh.api_key[-4:]} and entry.otp_verified


def test_rotation_to_a_bad_key_keeps_the_old_one(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key], control_vault: vault.ProcessVault
) -> None:
    client, _ = admin_client
    old = new_key()
    add(client, old)
    account = ExchangeAccount.objects.get()
    response = client.post(f"/exchange-accounts/{account.id}/rotate/", new_key(can_withdraw=True).form())
    assert response.status_code == 400
    account.refresh_from_db()
    assert account.kv_version == 1 and control_vault.kv_read(account.vault_path)["secret"] == old.secret


def test_deleting_destroys_every_version_in_vault(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key], control_vault: vault.ProcessVault
) -> None:
    client, _ = admin_client
    add(client, new_key())
    account = ExchangeAccount.objects.get()
    client.post(f"/exchange-accounts/{account.id}/rotate/", new_key().form())
    assert client.post(f"/exchange-accounts/{account.id}/delete/")["Location"] == "/exchange-accounts/"
    assert not ExchangeAccount.objects.exists()
    with pytest.raises(vault.VaultError):
        control_vault.kv_read(account.vault_path)
    assert AuditEntry.objects.filter(action="exchange_account.deleted").exists()


def test_only_admins_manage_accounts(
    logged_in: Callable[[str], tuple[Client, Person]], new_key: Callable[..., Key]
) -> None:
    for role in ("viewer", "operator"):
        client, _ = logged_in(role)
        assert client.get("/exchange-accounts/").status_code == 200
        assert client.get(ADD).status_code == 403
        assert add(client, new_key()).status_code == 403
    assert Client().get("/exchange-accounts/")["Location"].startswith("/accounts/login/")
    assert not ExchangeAccount.objects.exists()


def test_adding_needs_a_fresh_step_up(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, _ = logged_in("admin")
    assert client.get(ADD)["Location"].startswith("/accounts/step-up/")


# -- checks on the control worker ---------------------------------------------------------------


def _account(new_key: Callable[..., Key], **perms: bool) -> tuple[ExchangeAccount, Key]:
    key = new_key(**perms)
    account, _ = exchange_account_create(
        label=f"acct-{key.api_key[-6:]}",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    return account, key


def test_a_check_finds_a_key_that_became_able_to_withdraw(
    sandbox: Any, new_key: Callable[..., Key], control_vault: vault.ProcessVault, web_vault: vault.ProcessVault
) -> None:
    make_person("security-admin", "admin", email="sec@example.test")
    account, key = _account(new_key, ip_restrict=True)
    sandbox.admin.set_permissions(key.api_key, can_withdraw=True)
    problems = exchange_account_check(account=account, process_vault=control_vault)
    assert any("can now withdraw" in p for p in problems)
    account.refresh_from_db()
    assert account.last_check_ok is False and "withdraw" in account.last_check_message
    assert Alert.objects.filter(kind="key_check_failed", severity="critical").exists()
    assert AuditEntry.objects.filter(action="alert.key_check_failed").exists()
    assert any("sec@example.test" in m.to for m in mail.outbox)


def test_hygiene_flags_old_revoked_and_shared_keys(
    new_key: Callable[..., Key], control_vault: vault.ProcessVault, web_vault: vault.ProcessVault
) -> None:
    healthy, _ = _account(new_key, ip_restrict=True)
    old, _ = _account(new_key, ip_restrict=True)
    ExchangeAccount.objects.filter(pk=old.pk).update(rotated_at=timezone.now() - timedelta(days=91))
    revoked, revoked_key = _account(new_key, ip_restrict=True)
    # As if the key had been revoked or replaced on the exchange: what Vault holds no longer logs in.
    web_vault.kv_write(revoked.vault_path, {"apiKey": revoked_key.api_key, "secret": "no-longer-valid"})
    twin, _ = _account(new_key, ip_restrict=True)
    ExchangeAccount.objects.filter(pk=twin.pk).update(key_digest=healthy.key_digest)  # one key, two accounts

    results = exchange_accounts_hygiene(process_vault=control_vault)
    assert any("91 days old" in p for p in results[str(old.id)])
    assert any("rejected the key" in p for p in results[str(revoked.id)])
    assert any("used by another account" in p for p in results[str(twin.id)])
    assert any("used by another account" in p for p in results[str(healthy.id)])
    assert Alert.objects.count() >= 4


def test_a_check_with_the_web_token_cannot_read_the_secret(
    new_key: Callable[..., Key], web_vault: vault.ProcessVault
) -> None:
    account, _ = _account(new_key, ip_restrict=True)
    problems = exchange_account_check(account=account, process_vault=web_vault)
    assert problems == ["permission denied by Vault policy"]
