"""The alert webhook in a real browser: an admin sets it up, sends a test alert, and sees it delivered."""

from __future__ import annotations

import re
import secrets

from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.alerts.webhook import webhook_deliver_pending
from apps.vault import client as vault
from tests.e2e.conftest import browser_login
from tests.people import make_person
from tests.receiver import running_receiver


def test_an_admin_sets_up_the_webhook_and_a_test_alert_arrives_signed(
    live_server: LiveServer, page: Page, control_vault: vault.ProcessVault
) -> None:
    base = live_server.url
    admin = make_person("wren", "admin")
    secret = "whsec-CANARY-" + secrets.token_hex(16)
    browser_login(page, base, "wren", admin.code())
    expect(page.locator("h1")).to_have_text("Dashboard")

    with running_receiver() as receiver:
        page.get_by_role("link", name="Alert webhook").click()
        # Changing where alerts go is sensitive: a fresh code first.
        expect(page).to_have_url(re.compile(r"/accounts/step-up/"))
        page.locator("input[name=code]").fill(admin.code(1))
        page.get_by_role("button", name="Confirm", exact=True).click()
        expect(page.locator("h1")).to_have_text("Alert webhook")

        page.locator("input[name=url]").fill("ftp://alerts.example.com/hook")
        page.locator("input[name=secret]").fill(secret)
        page.get_by_role("button", name="Save and switch on").click()
        expect(page.locator("[role=alert]").first).to_contain_text("http:// or https://")
        expect(page.locator("input[name=secret]")).to_have_value("")  # write-only: never echoed back

        page.locator("input[name=url]").fill(receiver.url)
        page.locator("input[name=secret]").fill(secret)
        page.get_by_role("button", name="Save and switch on").click()
        expect(page.locator(".messages")).to_contain_text("Alert webhook saved")
        expect(page.locator(".facts")).to_contain_text("On")
        expect(page.locator(".facts")).to_contain_text("stored in Vault only")
        assert secret not in page.content()

        page.get_by_role("button", name="Send a test alert").click()
        expect(page.locator(".messages")).to_contain_text("Test alert #")
        # What the control worker's poller does every second.
        assert webhook_deliver_pending(process_vault=control_vault) == 1
        (delivery,) = receiver.received
        assert receiver.verify(delivery, secret)["kind"] == "webhook_test"

    page.get_by_role("link", name="Alerts history").click()
    row = page.locator("tr", has_text="Test alert")
    expect(row).to_contain_text("sent")
    assert secret not in page.content()
