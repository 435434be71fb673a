"""Balance snapshots (taken by the control worker) and reviewers' sign-offs of a day or a month."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.core.input_validation import NoControlCharacters


class BalanceSnapshot(models.Model):
    """What an exchange account held at one moment, as the exchange reported it.

    Only amounts: the control worker reads the key from Vault, asks the exchange, and stores the
    totals (free + locked) per asset. A failed attempt is stored too (ok=False, the reason), so a
    review can tell "the exchange refused" from "nobody looked".
    """

    class Source(models.TextChoices):
        SCHEDULE = "schedule", "Daily schedule"
        REQUEST = "request", "Requested from a review"
        SHELL = "shell", "manage.py review_balances"

    # SET_NULL, not PROTECT: deleting an account must not be blocked by its history, which keeps its label.
    account = models.ForeignKey(
        "exchanges.ExchangeAccount", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    account_label = models.CharField(max_length=100)
    taken_at = models.DateTimeField(db_index=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    ok = models.BooleanField()
    error = models.CharField(max_length=300, blank=True)
    balances = models.JSONField(default=dict)  # {"BTC": "1.00099", ...}: totals as decimal strings
    # Deposits and withdrawals the exchange reports since the previous snapshot, where it offers them.
    transfers = models.JSONField(default=list)
    transfers_note = models.CharField(max_length=300, blank=True)  # why there are none ("not offered", an error)

    class Meta:
        ordering = ["-taken_at", "-id"]
        indexes = [models.Index(fields=["account", "taken_at"])]

    def __str__(self) -> str:
        return f"balances of {self.account_label} at {self.taken_at:%Y-%m-%d %H:%M:%S}"


class ReviewSignoff(models.Model):
    """A reviewer marked a day's or a month's review done.

    `digest` is the SHA-256 of the review's canonical JSON as the reviewer saw it: if the data
    under the review changes later (a late fill, a new snapshot, an edited row), the review's
    digest no longer matches and the page says so. The same facts are in the audit entry
    (`audit_seq`), which nobody can alter unnoticed; the page compares the two.
    """

    class Kind(models.TextChoices):
        DAY = "day", "Day"
        MONTH = "month", "Month"

    period_kind = models.CharField(max_length=5, choices=Kind.choices)
    period = models.CharField(max_length=10)  # "2026-03-01" or "2026-03"
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_at = models.DateTimeField()
    note = models.TextField(blank=True, validators=[NoControlCharacters(multiline=True)])
    digest = models.CharField(max_length=64)
    audit_seq = models.BigIntegerField()

    class Meta:
        ordering = ["-signed_at", "-id"]
        indexes = [models.Index(fields=["period_kind", "period", "signed_at"])]

    def __str__(self) -> str:
        return f"{self.period_kind} {self.period} signed off by {self.signed_by_id}"
