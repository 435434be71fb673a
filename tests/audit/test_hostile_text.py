"""An audit entry never fails because of the text it quotes, and the chain still verifies (issue 13, item 3).

PostgreSQL refuses NUL in text and \\u0000 in jsonb, and an unpaired surrogate (undecodable bytes on a command
line) cannot be encoded at all: `record` stores U+FFFD in their place, and hashes what it stores.
"""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEntry
from apps.audit.services import audit_verify_chain, record
from tests.people import make_person

pytestmark = pytest.mark.django_db


def test_nul_and_unpaired_surrogates_are_stored_as_replacement_characters_and_the_chain_verifies() -> None:
    user = make_person("plain-user").user
    entry = record(
        actor=user,
        action="test.hostile\x00text",
        target=("thing\x00kind", "id\x00\udcff"),
        data={
            "reason": "key\x00leak \udcff\udcfe",
            "nested": [{"k\x00ey": "v\x00"}, "\ud800", 7, None, True],
            "untouched": "control \x01 and rtl \u202e stay as typed",
        },
    )
    stored = AuditEntry.objects.get(pk=entry.pk)
    assert stored.action == "test.hostile\ufffdtext"
    assert (stored.target_type, stored.target_id) == ("thing\ufffdkind", "id\ufffd\ufffd")
    assert stored.data == {
        "reason": "key\ufffdleak \ufffd\ufffd",
        "nested": [{"k\ufffdey": "v\ufffd"}, "\ufffd", 7, None, True],
        "untouched": "control \x01 and rtl \u202e stay as typed",
    }
    record(actor="system:test", action="test.after", data={"x": "\x00"})
    report = audit_verify_chain()
    assert report.ok and report.checked == AuditEntry.objects.count()
