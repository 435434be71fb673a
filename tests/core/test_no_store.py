"""Cache-Control: no-store on every page the application renders (apps.core.middleware.NoStoreMiddleware)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern

from apps.accounts.models import User, UserSession
from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAccount
from tests.people import Person

pytestmark = pytest.mark.django_db


def routes() -> Iterator[tuple[str, str, list[str]]]:
    """(namespace, route with <name> placeholders, parameter names) for every URL pattern."""

    def walk(patterns: list[URLPattern | URLResolver], prefix: str, namespace: str) -> Iterator[tuple[str, str]]:
        for p in patterns:
            if isinstance(p.pattern, RegexPattern):
                route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", str(p.pattern)).lstrip("^").rstrip("$")
                route = route.replace("\\", "")
            else:
                route = re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", str(p.pattern))
            if isinstance(p, URLResolver):
                yield from walk(p.url_patterns, prefix + route, p.namespace or namespace)
            else:
                yield namespace, prefix + route

    for namespace, route in walk(get_resolver().url_patterns, "", ""):
        yield namespace, route, re.findall(r"<(\w+)>", route)


def test_every_page_for_a_signed_in_admin_says_no_store(logged_in: Callable[[str], tuple[Client, Person]]) -> None:
    client, who = logged_in("admin")
    who.user.is_staff = who.user.is_superuser = True  # the Django admin's pages too
    who.user.save()
    account = ExchangeAccount.objects.create(
        label="cache",
        exchange_id="sandbox",
        key_fingerprint="abcd",
        key_digest="0" * 64,
        withdrawals=ExchangeAccount.Withdrawals.DISABLED,
    )
    bot = Bot.objects.create(
        name="cache",
        account=account,
        strategy="grid",
        symbols=["BTC/USDT"],
        params={"lower": "55000", "upper": "65000", "levels": 5, "order_amount": "0.001"},
        max_order_notional=Decimal("1000"),
        max_position_notional=Decimal("5000"),
        daily_loss_limit=Decimal("1000"),
        max_drawdown_pct=Decimal("50"),
    )
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    values: dict[str, Any] = {
        "bot_id": bot.pk,
        "account_id": account.pk,
        "user_id": who.user.pk,
        "session_id": UserSession.objects.filter(user=who.user).latest("pk").pk,
        "seq": AuditEntry.objects.latest("seq").seq,
        "run_id": 1,
        "alert_id": 1,
        "fmt": "csv",
        "action": "start",
        "object_id": who.user.pk,
        "app_label": "accounts",
        "content_type_id": ContentType.objects.get_for_model(User).pk,
        "url": "no-such-page/",
        "reviews:kind": "day",
        "reviews:key": yesterday,
        "killswitch:kind": "bot_daily_loss",
        "accounts:action": "role",
    }
    seen: dict[str, int] = {}
    for namespace, route, names in routes():
        path = route
        for name in names:
            value = values.get(f"{namespace}:{name}", values.get(name))
            assert value is not None, f"no value for <{name}> in {route}: add one to this test"
            path = path.replace(f"<{name}>", str(value), 1)
        if path in ("accounts/logout/", "admin/logout/"):
            continue  # GET answers 405 there; but leave the session alone for the pages after it
        response = client.get(f"/{path}")
        assert response.status_code < 500, (path, response.status_code)
        cache_control = {part.strip() for part in response.get("Cache-Control", "").split(",")}
        assert {"no-store", "private"} <= cache_control, (path, response.status_code, cache_control)
        seen[path] = response.status_code
    # The walk reached real pages, not only refusals: the dashboard (which had no header) among them.
    assert seen[""] == 200
    assert sum(status == 200 for status in seen.values()) >= 25, seen
    assert client.get("/").status_code == 200  # still signed in: the walk changed nothing


def test_the_login_page_says_no_store_too(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_static_files_stay_cacheable(client: Client) -> None:
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")
    assert "Access-Control-Allow-Origin" not in response  # for the console's own pages only
