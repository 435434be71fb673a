from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.core.input_validation import NoBidiControls, NoControlCharacters


class ExchangeAccount(models.Model):
    """An account on an exchange. Its API secret lives only in Vault at kv/exchange-accounts/<id>.

    The database keeps metadata: the last four characters of the API key (to tell keys apart),
    an HMAC of the key (to notice one key used by two accounts), and what the last check found.
    """

    class Withdrawals(models.TextChoices):
        DISABLED = "disabled", "Disabled (confirmed by the exchange)"
        ATTESTED = "attested", "Disabled (the exchange cannot tell; confirmed by an admin)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    label = models.CharField(max_length=100, unique=True, validators=[NoControlCharacters(), NoBidiControls()])
    exchange_id = models.CharField(max_length=50)
    key_fingerprint = models.CharField(max_length=4)
    key_digest = models.CharField(max_length=64, db_index=True)
    withdrawals = models.CharField(max_length=10, choices=Withdrawals.choices)
    ip_restricted = models.BooleanField(null=True)  # None: the exchange does not tell
    kv_version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    rotated_at = models.DateTimeField(default=timezone.now)
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_check_ok = models.BooleanField(null=True)
    last_check_message = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["label"]

    def __str__(self) -> str:
        return f"{self.label} ({self.exchange_id} …{self.key_fingerprint})"

    @property
    def vault_path(self) -> str:
        return f"exchange-accounts/{self.id}"

    @property
    def key_age(self) -> timedelta:
        return timezone.now() - self.rotated_at

    @property
    def key_is_old(self) -> bool:
        return self.key_age > timedelta(days=settings.EXCHANGE_KEY_MAX_AGE_DAYS)


class ExchangeAuthFailure(models.Model):
    """An exchange refused an account's key (authentication or permission). Counted by a breaker.

    Only the error kind is kept (never the request, which may quote signed parameters).
    """

    account = models.ForeignKey(ExchangeAccount, on_delete=models.CASCADE, related_name="+")
    bot = models.ForeignKey("bots.Bot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.CharField(max_length=60)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        db_table = "killswitch_exchangeauthfailure"  # the table it had when the kill switch app held it
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"auth failure on {self.account_id}: {self.error}"
