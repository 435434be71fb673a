"""Hostile audit filters: refused with a message, nothing queried, nothing exported, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditEntry
from tests.people import Person

pytestmark = pytest.mark.django_db
LoggedIn = Callable[[str], tuple[Client, Person]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"actor": "alice\x00"}, "Null characters are not allowed"),
        ({"actor": "alice\x1b[2J"}, "Remove the control character(s) (U+001B)"),
        ({"q": "needle\x07"}, "Remove the control character(s) (U+0007)"),
        ({"q": "multi\nline"}, "Remove the control character(s) (U+000A)"),
        ({"target": "bots.bot:1\x9b"}, "Remove the control character(s) (U+009B)"),
        ({"actor": "a" * 10000}, "at most 150 characters"),
        ({"q": "x" * 10000}, "at most 200 characters"),
        ({"since": "0001-01-01"}, "Give a time between 2000-01-01 and"),
        ({"since": "1999-12-31T23:59"}, "Give a time between 2000-01-01 and"),
        ({"until": "9999-12-31T23:59"}, "Give a time between 2000-01-01 and"),
        ({"until": "0000-01-01"}, "Enter a valid date/time"),
        ({"since": "2026-13-01"}, "Enter a valid date/time"),
        ({"start": "9" * 30}, "less than or equal to"),
        ({"start": "1 OR 1=1"}, "Enter a whole number"),
        ({"before": "-1"}, "greater than or equal to 1"),
        ({"after": "1e5"}, "Enter a whole number"),
    ],
)
def test_it_refuses_hostile_filters_without_querying_or_exporting(
    logged_in: LoggedIn, params: dict[str, str], message: str
) -> None:
    client, _ = logged_in("viewer")
    query = urlencode(params)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/audit/?{query}")
    assert response.status_code == 400 and message in response.content.decode()
    assert not [q for q in queries.captured_queries if 'FROM "audit_auditentry" WHERE' in q["sql"]]
    assert client.get(f"/audit/export.json?{query}").status_code == 400
    assert not AuditEntry.objects.filter(action="audit.exported").exists()


def test_a_time_range_inside_the_bounds_is_used(logged_in: LoggedIn) -> None:
    client, _ = logged_in("viewer")
    soon = (timezone.now() + timedelta(days=300)).strftime("%Y-%m-%dT%H:%M")
    assert client.get(f"/audit/?since=2000-01-01T00:00&until={soon}").status_code == 200


@pytest.mark.parametrize("seq", ["99999999999999999999", str(2**63), "0"])
def test_an_entry_number_beyond_the_column_is_a_404(logged_in: LoggedIn, seq: str) -> None:
    client, _ = logged_in("viewer")
    assert client.get(f"/audit/{seq}/").status_code == 404


@pytest.mark.parametrize("fmt", ["xml", "csv%00", "..%2f..%2fsettings.py", "c" * 5000])
def test_an_unknown_export_format_is_a_404_and_not_audited(logged_in: LoggedIn, fmt: str) -> None:
    client, _ = logged_in("viewer")
    assert client.get(f"/audit/export.{fmt}").status_code == 404
    assert not AuditEntry.objects.filter(action="audit.exported").exists()
