from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from apps.vault import client as vault
from apps.vault import server as vault_server
from tests.harness import Harness


def _path() -> str:
    return f"{vault.EXCHANGE_SECRETS_PREFIX}/{uuid.uuid4()}"


def test_web_token_cannot_read_back_the_secret_it_wrote(web_vault: vault.ProcessVault) -> None:
    path = _path()
    assert web_vault.kv_write(path, {"apiKey": "AKIA-test", "secret": "CANARY-web-readback"}) == 1
    with pytest.raises(vault.VaultForbidden):
        web_vault.kv_read(path)
    # It may see which fields exist, never their values.
    assert web_vault.kv_subkeys(path) == {"apiKey": None, "secret": None}


def test_control_token_reads_what_web_wrote(web_vault: vault.ProcessVault, control_vault: vault.ProcessVault) -> None:
    path = _path()
    web_vault.kv_write(path, {"apiKey": "k", "secret": "CANARY-control-read"})
    assert control_vault.kv_read(path) == {"apiKey": "k", "secret": "CANARY-control-read"}


@pytest.mark.parametrize("path", ["other/thing", "bots/1"])
def test_web_token_cannot_write_outside_exchange_accounts(web_vault: vault.ProcessVault, path: str) -> None:
    with pytest.raises(vault.VaultForbidden):
        web_vault.kv_write(path, {"x": "y"})


def test_control_token_cannot_write_exchange_secrets(control_vault: vault.ProcessVault) -> None:
    with pytest.raises(vault.VaultForbidden):
        control_vault.kv_write(_path(), {"apiKey": "k", "secret": "s"})


def test_each_process_token_holds_only_its_own_policy(services: Harness) -> None:
    for process, policy in vault_server.PROCESS_ROLES.items():
        pv = vault.ProcessVault(services.vault_addr, services.tokens[process].token)
        assert sorted(pv.token_policies()) == sorted([policy, "default"])


def test_settings_hold_the_web_token_and_never_the_root_token(services: Harness) -> None:
    assert services.tokens["web"].token == settings.VAULT_TOKEN
    values = [str(getattr(settings, name)) for name in dir(settings) if name.isupper()]
    assert services.admin_token
    assert not any(services.admin_token in value for value in values)


def test_bootstrap_is_idempotent_and_sets_up_the_transit_key(services: Harness) -> None:
    assert vault_server.bootstrap(services.vault_addr, services.admin_token) == []


def test_process_token_repr_hides_the_token(services: Harness) -> None:
    issued = services.tokens["web"]
    assert issued.token not in repr(issued)
