"""The login story in a real browser: enrol TOTP, use it, log out, log in again, get locked out."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

from django_otp.oath import TOTP
from playwright.sync_api import Page, expect
from pytest_django.live_server_helper import LiveServer

from apps.accounts.models import User
from apps.accounts.services import user_set_role

PASSWORD = "a long browser-test password"  # 16+ characters
MAX_FAILURES = 5  # AXES_FAILURE_LIMIT


def totp_from_secret(secret: str) -> TOTP:
    """The TOTP an authenticator app would build from the key shown on the enrolment page."""
    key = secret.replace(" ", "").upper()
    return TOTP(base64.b32decode(key + "=" * (-len(key) % 8)), step=30, t0=0, digits=6)


def code_at(totp: TOTP, steps_ahead: int = 0) -> str:
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def wrong_code(totp: TOTP) -> str:
    valid = {code_at(totp, k) for k in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def log_in_with_password(page: Page, base: str, username: str = "carol") -> None:
    page.goto(f"{base}/accounts/login/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).click()


def submit_code(page: Page, code: str, button: str) -> None:
    page.locator("input[name=code]").fill(code)
    page.get_by_role("button", name=button, exact=True).click()


def log_out(page: Page, base: str) -> None:
    page.locator("header").get_by_role("button", name="Log out", exact=True).click()
    expect(page).to_have_url(f"{base}/accounts/login/")


def test_login_page_renders_in_chromium(live_server: LiveServer, page: Page) -> None:
    response = page.goto(f"{live_server.url}/accounts/login/")
    assert response is not None and response.status == 200
    expect(page).to_have_title(re.compile("Log in"))
    expect(page.locator("input[name=username]")).to_be_visible()
    expect(page.locator("input[name=password]")).to_have_attribute("type", "password")
    expect(page.get_by_role("button", name="Log in", exact=True)).to_be_visible()


def test_enrol_log_in_again_and_get_locked_out(live_server: LiveServer, page: Page) -> None:
    base = live_server.url
    user = User.objects.create_user(username="carol", password=PASSWORD)
    user_set_role(user=user, role="admin", actor="system:test")

    # First login: no confirmed device yet, so the password leads to enrolment.
    log_in_with_password(page, base)
    expect(page).to_have_url(f"{base}/accounts/enroll/")
    expect(page.locator("#totp-qr svg")).to_be_visible()
    totp = totp_from_secret(page.locator("#totp-secret").inner_text())
    submit_code(page, code_at(totp), "Confirm")

    # Backup codes are shown once, then on to the dashboard.
    expect(page.locator("#backup-codes li")).to_have_count(10)
    codes = [c.strip() for c in page.locator("#backup-codes li").all_inner_texts()]
    assert len(set(codes)) == 10 and all(codes), codes
    # They can be kept: saved as a text file, or printed (the browser's print dialog is stubbed here).
    with page.expect_download() as saved:
        page.get_by_role("button", name="Download as a text file").click()
    assert saved.value.suggested_filename == "botconsole-backup-codes.txt"
    lines = Path(saved.value.path()).read_text().splitlines()
    assert [line for line in lines if line in codes] == codes and "carol" in lines[1]
    page.evaluate("() => { window.printed = 0; window.print = () => { window.printed += 1; }; }")
    page.get_by_role("button", name="Print").click()
    assert page.evaluate("window.printed") == 1
    page.get_by_role("link", name="Continue to dashboard").click()
    expect(page).to_have_url(f"{base}/")
    expect(page.locator("h1")).to_have_text("Dashboard")

    log_out(page, base)
    page.goto(f"{base}/")  # logged out means logged out: the dashboard sends back to the login page
    expect(page).to_have_url(re.compile(rf"^{re.escape(base)}/accounts/login/"))

    # Second login: password, then a TOTP code. The enrolment code may not be replayed, so
    # use the next 30-second step's code (django-otp allows one step of drift).
    log_in_with_password(page, base)
    expect(page).to_have_url(f"{base}/accounts/otp/")
    submit_code(page, code_at(totp, steps_ahead=1), "Verify")
    expect(page).to_have_url(f"{base}/")
    expect(page.locator("h1")).to_have_text("Dashboard")

    # Third login: wrong codes until the account is locked. django-otp's back-off throttles the
    # later attempts, but a throttled attempt still counts as a failure, so no waiting is needed.
    log_out(page, base)
    log_in_with_password(page, base)
    expect(page).to_have_url(f"{base}/accounts/otp/")
    bad = wrong_code(totp)
    for attempt in range(1, MAX_FAILURES + 1):
        with page.expect_response(lambda r: r.url == f"{base}/accounts/otp/" and r.request.method == "POST") as posted:
            submit_code(page, bad, "Verify")
        status = posted.value.status
        if attempt < MAX_FAILURES:
            assert status != 429, f"locked out after only {attempt} failures"
            expect(page).to_have_url(f"{base}/accounts/otp/")
            expect(page.locator("input[name=code]")).to_be_visible()
        else:
            assert status == 429, f"not locked out after {attempt} failures (HTTP {status})"
    expect(page.locator("h1")).to_contain_text(re.compile("locked", re.IGNORECASE))
    expect(page.locator("main")).to_contain_text("Try again after")
    expect(page.locator("h1")).not_to_have_text("Dashboard")
