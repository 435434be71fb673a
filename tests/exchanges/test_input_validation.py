"""Hostile input to the exchange account forms: a form error that never repeats a key, nothing stored."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from apps.audit.models import AuditEntry
from apps.exchanges.models import ExchangeAccount
from apps.vault import client as vault
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db
ADD = "/exchange-accounts/add/"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("label", "Main\x00", "Null characters are not allowed"),
        ("label", "Main\x1b[31m", "Remove the control character(s) (U+001B)"),
        ("label", "Main\u202eniaM", "Remove the text-direction control character(s) (U+202E)"),
        ("label", "L" * 10000, "at most 100 characters"),
        ("apiKey", "KEY\x00PART", "Null characters are not allowed"),
        ("apiKey", "KEY\x7fPART", "Remove the control character(s) (U+007F)"),
        ("secret", "CANARYSECRET\x01HIDDEN", "Remove the control character(s) (U+0001)"),
        ("secret", "CANARYSECRET" * 1000, "at most 2048 characters"),
        ("password", "pass\x85phrase", "Remove the control character(s) (U+0085)"),
        # Keys travel in HTTP headers (latin-1): anything but printable ASCII used to fail the request.
        ("apiKey", "\u202egnp.exe", "Keys and secrets are printable ASCII characters, without spaces."),
        ("secret", "s\u00e9cret-\U0001f600", "Keys and secrets are printable ASCII characters, without spaces."),
        ("password", "pass\u2066phrase", "A passphrase is printable ASCII characters."),
        ("exchange_id", "../../sandbox", "Select a valid choice"),
    ],
)
def test_it_refuses_hostile_account_input_without_repeating_it_or_storing_anything(
    admin_client: tuple[Client, Person],
    new_key: Callable[..., Key],
    root_vault: vault.ProcessVault,
    field: str,
    value: str,
    message: str,
) -> None:
    client, _ = admin_client
    key = new_key()
    data = {"label": "Main", "exchange_id": "sandbox", **key.form(), field: value}
    in_vault = set(root_vault.kv_list("exchange-accounts"))  # Vault is shared by the session's tests
    response = client.post(ADD, data)
    body = response.content.decode()
    assert response.status_code == 400 and message in body
    assert key.secret not in body and key.api_key not in body
    if field in ("apiKey", "secret", "password"):
        assert value not in body and "HIDDEN" not in body and "PART" not in body
    assert not ExchangeAccount.objects.exists()
    assert set(root_vault.kv_list("exchange-accounts")) == in_vault
    assert not AuditEntry.objects.filter(action__startswith="exchange_account.").exists()


def test_rotating_with_a_hostile_secret_keeps_the_old_key(
    admin_client: tuple[Client, Person], new_key: Callable[..., Key]
) -> None:
    client, _ = admin_client
    key = new_key()
    assert client.post(ADD, {"label": "Main", "exchange_id": "sandbox", **key.form()}).status_code == 302
    account = ExchangeAccount.objects.get()
    fresh = new_key()
    response = client.post(f"/exchange-accounts/{account.pk}/rotate/", fresh.form(secret=fresh.secret + "\x00"))
    assert response.status_code == 400 and "Null characters are not allowed" in response.content.decode()
    after = ExchangeAccount.objects.get()
    assert after.kv_version == 1 and after.key_fingerprint == key.api_key[-4:]
    assert not AuditEntry.objects.filter(action="exchange_account.rotated").exists()


@pytest.mark.parametrize("account_id", ["not-a-uuid", "..%2f..%2f", "0" * 5000, "1 OR 1=1"])
def test_a_malformed_account_id_is_a_404(admin_client: tuple[Client, Person], account_id: str) -> None:
    client, _ = admin_client
    for action in ("rotate", "check", "delete"):
        assert client.post(f"/exchange-accounts/{account_id}/{action}/").status_code == 404
