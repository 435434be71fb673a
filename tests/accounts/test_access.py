from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from apps.accounts.middleware import OPEN_VIEWS, PASSWORD_ONLY_VIEWS
from tests.people import Person, password_login

pytestmark = pytest.mark.django_db


def all_urls() -> Iterator[tuple[str, str]]:
    """Every URL the resolver knows, with each path parameter filled in, and its view name."""

    def walk(patterns: list[URLPattern | URLResolver], prefix: str, namespace: str) -> Iterator[tuple[str, str]]:
        for p in patterns:
            route = str(p.pattern)
            if isinstance(p, URLResolver):
                ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
                yield from walk(p.url_patterns, prefix + route, ns)
            else:
                path = prefix + route
                path = re.sub(r"<int:\w+>", "1", path)
                path = re.sub(r"<(?:slug|str|path):\w+>", "x", path)
                path = re.sub(r"<uuid:\w+>", "00000000-0000-0000-0000-000000000000", path)
                path = re.sub(r"\(\?P<\w+>[^)]*\)", "x", path)  # the admin's regex routes
                path = path.lstrip("^").rstrip("$").replace("\\", "")
                yield "/" + path, f"{namespace}{p.name}" if p.name else path

    yield from walk(get_resolver().url_patterns, "", "")


def test_the_open_views_are_exactly_login_health_and_metrics() -> None:
    assert {"accounts:login", "ops:healthz", "ops:metrics"} == OPEN_VIEWS
    assert {"accounts:otp", "accounts:enroll", "accounts:logout"} == PASSWORD_ONLY_VIEWS


@pytest.mark.parametrize("method", ["get", "post"])
def test_every_url_sends_an_anonymous_visitor_to_login(method: str) -> None:
    client = Client()
    urls = [(u, n) for u, n in all_urls() if n not in OPEN_VIEWS]
    assert len(urls) > 20  # the walk really found the admin and our views
    for url, name in urls:
        response = getattr(client, method)(url)
        assert response.status_code == 302, (url, name, response.status_code)
        assert response["Location"].startswith("/accounts/login/"), (url, name)


def test_every_url_sends_a_password_only_session_to_the_otp_step(person: Callable[..., Person]) -> None:
    client = Client()
    password_login(client, person("alice"))
    for url, name in all_urls():
        if name in OPEN_VIEWS | PASSWORD_ONLY_VIEWS:
            continue
        response = client.get(url)
        assert response.status_code == 302 and response["Location"] == "/accounts/otp/", (url, name)


@pytest.mark.parametrize(
    ("role", "users_page", "user_action"),
    [("admin", 200, 302), ("operator", 403, 403), ("viewer", 403, 403)],
)
def test_each_role_sees_what_it_may(
    logged_in: Callable[[str], tuple[Client, Person]], role: str, users_page: int, user_action: int
) -> None:
    client, who = logged_in(role)
    assert client.get("/").status_code == 200
    assert client.get("/accounts/sessions/").status_code == 200
    assert client.get("/accounts/users/").status_code == users_page
    assert client.get(f"/accounts/users/{who.user.pk}/").status_code == users_page
    response = client.post(f"/accounts/users/{who.user.pk}/unlock/")
    assert response.status_code == user_action
    if user_action == 302:  # the admin is first asked to confirm with a fresh code
        assert response["Location"].startswith("/accounts/step-up/")


def test_the_admin_site_is_behind_otp(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    from django.contrib import admin
    from django_otp.admin import OTPAdminSite

    assert isinstance(admin.site, OTPAdminSite)
    client, who = logged_in("admin")
    who.user.is_staff = True
    who.user.save()
    assert client.get("/admin/").status_code == 200


def test_csrf_is_enforced_on_every_form(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, _ = logged_in("admin")
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = client.cookies
    for url in ["/accounts/logout/", "/accounts/users/", "/accounts/backup-codes/regenerate/", "/accounts/password/"]:
        assert strict.post(url).status_code == 403, url
    assert (
        Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "a", "password": "b"}).status_code == 403
    )


def test_security_headers_are_present(client: Client) -> None:
    response = client.get("/accounts/login/")
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # A nonce appears only on pages that use one; none of ours needs inline script.
    assert re.search(r"script-src 'self'( 'nonce-[\w+/=-]+')?(;|$)", csp)
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "camera=()" in response["Permissions-Policy"]
    assert "<script" not in response.content.decode()  # no inline script to need 'unsafe-inline'
