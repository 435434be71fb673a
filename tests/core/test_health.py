from __future__ import annotations

import time

import pytest
from django.test import Client

from apps.vault import client as vault
from apps.vault import server as vault_server
from tests.harness import Harness

pytestmark = pytest.mark.django_db


def test_healthz_is_all_green_without_login(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "down": [],
        "checks": {"database": "ok", "broker": "ok", "channel_layer": "ok", "vault": "ok"},
    }


def test_healthz_reveals_no_version_or_address(client: Client, services: Harness) -> None:
    body = client.get("/healthz").content.decode()
    assert "version" not in body.lower()
    assert "127.0.0.1" not in body and services.vault_addr not in body


def test_healthz_answers_503_naming_vault_when_openbao_is_sealed(client: Client, services: Harness) -> None:
    vault_server.seal(services.vault_addr, services.admin_token)
    try:
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["down"] == ["vault"]
        assert response.json()["checks"]["vault"] == "sealed"
    finally:
        vault_server.unseal(services.vault_addr, services.unseal_key)
        deadline = time.monotonic() + 30
        while vault.health(services.vault_addr) != "active" and time.monotonic() < deadline:
            time.sleep(0.2)
    assert client.get("/healthz").status_code == 200


def test_healthz_refuses_post(client: Client) -> None:
    assert client.post("/healthz").status_code == 405
