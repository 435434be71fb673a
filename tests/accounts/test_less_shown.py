"""What only admins see: the user name a failed sign-in typed (sometimes a password in the wrong field),
and the machine name and pid of a fleet supervisor."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.models import AuditEntry
from apps.bots.models import FleetHost
from tests.people import Person

pytestmark = pytest.mark.django_db

Login = Callable[[str], tuple[Client, Person]]


def body(response: object) -> str:
    content = b"".join(response.streaming_content) if getattr(response, "streaming", False) else response.content  # type: ignore[attr-defined]
    return content.decode()


@pytest.fixture
def typed() -> str:
    """What someone typed as a user name, five times: a password put in the wrong field."""
    text = f"Hunter2-{secrets.token_hex(6)}"
    anonymous = Client()
    for _ in range(5):
        anonymous.post(
            "/accounts/login/", {"username": text, "password": "x"}, REMOTE_ADDR="192.0.2.10"
        )  # pragma: allowlist secret
    assert AuditEntry.objects.filter(action="login.failed", data__username=text).count() >= 5
    assert AuditEntry.objects.filter(action="login.locked_out", data__username=text).exists()
    return text


def pages(client: Client, typed: str) -> dict[str, str]:
    failed = AuditEntry.objects.filter(action="login.failed", data__username=typed).latest("seq")
    locked = AuditEntry.objects.filter(action="login.locked_out", data__username=typed).latest("seq")
    shown = {
        "list": client.get("/audit/"),
        "failed detail": client.get(f"/audit/{failed.seq}/"),
        "lockout detail": client.get(f"/audit/{locked.seq}/"),
        "csv": client.get("/audit/export.csv?action=login.*"),
        "json": client.get("/audit/export.json?action=login.*"),
    }
    for name, response in shown.items():
        assert response.status_code == 200, name
    return {name: body(response) for name, response in shown.items()}


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_it_hides_a_failed_sign_ins_typed_user_name_from_everyone_but_admins(
    logged_in: Login, typed: str, role: str
) -> None:
    client, _ = logged_in(role)
    for name, text in pages(client, typed).items():
        assert typed not in text and typed.lower() not in text.lower(), name
        assert "(hidden)" in text, name
    exported = json.loads(pages(client, typed)["json"])
    failed = [e for e in exported if e["action"] == "login.failed"]
    assert failed and all(e["data"]["username"] == "(hidden)" for e in failed)
    assert all(e["ip"] == "192.0.2.10" for e in failed)  # the rest of the entry is there
    # Searching for the text must not find it either: a hit would say it is there.
    failed_seq = AuditEntry.objects.filter(action="login.failed", data__username=typed).latest("seq").seq
    search = body(client.get("/audit/", {"q": typed[:12]}))
    assert f'href="/audit/{failed_seq}/"' not in search
    assert f'href="/audit/{failed_seq}/"' in body(client.get("/audit/", {"q": "login.failed"}))


def test_an_admin_sees_and_finds_the_typed_user_name(logged_in: Login, typed: str) -> None:
    client, _ = logged_in("admin")
    for name, text in pages(client, typed).items():
        assert typed in text, name
    exported = json.loads(pages(client, typed)["json"])
    assert any(e["action"] == "login.failed" and e["data"]["username"] == typed for e in exported)
    failed_seq = AuditEntry.objects.filter(action="login.failed", data__username=typed).latest("seq").seq
    assert f'href="/audit/{failed_seq}/"' in body(client.get("/audit/", {"q": typed[:12]}))


def test_the_audit_log_is_still_refused_to_an_anonymous_visitor(typed: str) -> None:
    response = Client().get("/audit/export.json")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(("role", "shown"), [("admin", True), ("operator", False), ("viewer", False)])
def test_only_admins_see_a_fleet_hosts_machine_and_pid(logged_in: Login, role: str, shown: bool) -> None:
    now = timezone.now()
    FleetHost.objects.create(
        label="gpu-box-2", hostname="rack7-node42.internal", pid=424242, started_at=now, last_seen=now
    )
    client, _ = logged_in(role)
    page = client.get("/bots/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "gpu-box-2" in text  # the label is for everyone
    assert ("rack7-node42.internal" in text) is shown
    assert ("424242" in text) is shown
