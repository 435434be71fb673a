"""Error pages: the site's own with DEBUG off; with DEBUG on, Django's technical page without a credential.

The route that fails on purpose (/_test/boom/) is in tests.support.urls, installed for these tests only.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import django
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.template import loader
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.core.debug import CredentialMaskingFilter, mask_credentials
from tests.people import Person

pytestmark = pytest.mark.django_db

Login = Callable[[str], tuple[Client, Person]]


@pytest.fixture
def boom_urls(settings: Any) -> None:
    settings.ROOT_URLCONF = "tests.support.urls"


def credentials() -> dict[str, str]:
    """What no page may show; each is really set, so a test that looks for them can fail."""
    values = {
        "valkey password": urlsplit(django_settings.REDIS_URL).password or "",
        "postgres password": django_settings.DATABASES["default"]["PASSWORD"],
        "vault token": django_settings.VAULT_TOKEN,
        "secret key": django_settings.SECRET_KEY,
    }
    assert all(values.values()), [name for name, value in values.items() if not value]
    return values


def assert_no_credential(body: str) -> None:
    for name, value in credentials().items():
        assert value not in body, f"the {name} is on the page"


# -- DEBUG on: the technical page, masked ---------------------------------------------------------


@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_with_debug_on_the_technical_500_page_shows_no_password(
    settings: Any, boom_urls: None, logged_in: Login, accept: str
) -> None:
    settings.DEBUG = True
    client, _ = logged_in("viewer")
    client.raise_request_exception = False
    typed = f"typed-{secrets.token_hex(8)}"
    response = client.post("/_test/boom/", {"password": typed, "code": "123456", "note": "hello"}, HTTP_ACCEPT=accept)
    assert response.status_code == 500
    body = response.content.decode()
    # It is the technical page, with the settings, the frame variables and the POST data on it ...
    for shown in ("ConnectionError", "REDIS_URL", "CELERY_BROKER_URL", "CHANNEL_LAYERS", "broker_url", "hello"):
        assert shown in body, shown
    # ... where every credential is masked: in settings, nested settings, the message, the locals, the POST.
    assert_no_credential(body)
    assert typed not in body and "123456" not in body
    host = urlsplit(settings.REDIS_URL).hostname
    assert f":********@{host}" in body  # masked, not dropped: the address still helps whoever debugs


def test_the_filter_masks_credentials_in_nested_settings_and_urls() -> None:
    safe = CredentialMaskingFilter().get_safe_settings()
    for name in ("REDIS_URL", "CELERY_BROKER_URL"):
        assert urlsplit(safe[name]).password == "********", name
    layer_hosts = safe["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"]
    assert urlsplit(layer_hosts[0]["address"]).password == "********"
    assert safe["DATABASES"]["default"]["PASSWORD"] != django_settings.DATABASES["default"]["PASSWORD"]
    assert_no_credential(repr(safe))


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgres://bot:s3cr3t@db:5432/x", "postgres://bot:********@db:5432/x"),  # pragma: allowlist secret
        (
            "redis://:pw@valkey:6379/0 and rediss://u:p@h/1",
            "redis://:********@valkey:6379/0 and rediss://u:********@h/1",
        ),
        ("https://tok3n@git.example/x", "https://********@git.example/x"),
        ("&#x27;redis://:p&#x27;w@h:1&#x27;", "&#x27;redis://:********@h:1&#x27;"),
        ("see https://example.org/@user", "see https://example.org/@user"),
    ],
)
def test_mask_credentials(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


# -- DEBUG off: the site's own pages ------------------------------------------------------------


def test_with_debug_off_every_error_page_is_the_sites_own_and_tells_nothing(boom_urls: None, logged_in: Login) -> None:
    assert not django_settings.DEBUG
    client, _ = logged_in("viewer")
    client.raise_request_exception = False
    missing = f"/no-such-page-{secrets.token_hex(4)}/"
    pages = {
        "404": client.get(missing),
        "500": client.get("/_test/boom/"),
        "400": client.get("/", HTTP_HOST="attacker.example"),
        "403": client.get("/accounts/users/"),  # a viewer may not manage users
    }
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = client.cookies
    pages["403 csrf"] = strict.post("/accounts/logout/")
    headings = {
        "404": "Not found",
        "500": "Something went wrong",
        "400": "Bad request",
        "403": "Not allowed",
        "403 csrf": "The form could not be accepted",
    }
    for name, response in pages.items():
        assert response.status_code == int(name[:3]), (name, response.status_code)
        body = response.content.decode()
        assert f"<h1>{headings[name]}</h1>" in body, name
        assert "/static/css/app.css" in body and 'class="topbar"' in body, name  # the site's layout
        for told in (
            "Traceback",
            "URLconf",
            "urlpatterns",
            "Django Version",
            django.get_version(),
            "SECRET_KEY",
            "REDIS_URL",
            "DATABASES",
            "ConnectionError",
            "CSRF",
            "attacker.example",
            missing,
            str(django_settings.BASE_DIR),
            "Exception",
        ):
            assert told not in body, (name, told)
        assert_no_credential(body)
    assert client.get("/").status_code == 200  # nothing above logged the viewer out


def test_the_500_page_renders_with_no_request_and_no_database() -> None:
    with CaptureQueriesContext(connection) as queries:
        body = loader.get_template("500.html").render()
    assert len(queries) == 0
    assert "<h1>Something went wrong</h1>" in body and "/static/css/app.css" in body
