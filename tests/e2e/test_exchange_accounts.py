"""Exchange accounts in a real browser: step-up, add a sandbox key, see a withdraw-enabled key refused."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from tests.e2e.conftest import browser_login
from tests.keys import Key
from tests.people import make_person


def test_an_admin_adds_a_sandbox_account_and_a_withdrawing_key_is_refused(
    live_server: LiveServer, page: Page, new_key: Callable[..., Key]
) -> None:
    base = live_server.url
    admin = make_person("erin", "admin")
    browser_login(page, base, "erin", admin.code())
    expect(page.locator("h1")).to_have_text("Dashboard")

    page.get_by_role("link", name="Exchange accounts").click()
    page.get_by_role("link", name="Add an account").click()
    # Adding a key is a sensitive action: a fresh code first.
    expect(page).to_have_url(re.compile(r"/accounts/step-up/"))
    page.locator("input[name=code]").fill(admin.code(1))
    page.get_by_role("button", name="Confirm", exact=True).click()
    expect(page.locator("h1")).to_have_text("Add an exchange account")

    good = new_key(ip_restrict=False)
    page.locator("input[name=label]").fill("Sandbox main")
    page.locator("select[name=exchange_id]").select_option("sandbox")
    page.locator("input[name=apiKey]").fill(good.api_key)
    page.locator("input[name=secret]").fill(good.secret)
    page.get_by_role("button", name="Check and save").click()
    expect(page).to_have_url(f"{base}/exchange-accounts/")
    row = page.locator("tr", has_text="Sandbox main")
    expect(row).to_contain_text(f"…{good.api_key[-4:]}")
    expect(row).to_contain_text("no IP limit")
    expect(page.locator(".messages")).to_contain_text("not restricted to your server's IP address")
    assert good.secret not in page.content()

    bad = new_key(can_withdraw=True)
    page.get_by_role("link", name="Add an account").click()
    page.locator("input[name=label]").fill("Risky")
    page.locator("select[name=exchange_id]").select_option("sandbox")
    page.locator("input[name=apiKey]").fill(bad.api_key)
    page.locator("input[name=secret]").fill(bad.secret)
    page.get_by_role("button", name="Check and save").click()
    expect(page.locator("[role=alert]").first).to_contain_text("This key can withdraw funds, so it was not saved")
    # The write-only fields come back empty.
    expect(page.locator("input[name=apiKey]")).to_have_value("")
    expect(page.locator("input[name=secret]")).to_have_value("")
    page.goto(f"{base}/exchange-accounts/")
    expect(page.locator("tbody tr")).to_have_count(1)
