from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models, transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.vault import client as vault


class User(AbstractUser):  # type: ignore[django-manager-missing]  # untyped django-otp FK
    """A console user. Users are deactivated, never deleted: the audit log refers to them.

    The permissions below are granted through the three role groups (viewer, operator,
    admin) that migration 0002 creates.
    """

    class Meta:
        db_table = "accounts_user"
        permissions = [
            ("view_console", "View dashboards, bots and the audit log"),
            ("operate_bots", "Start and stop bots"),
            ("trigger_killswitch", "Press the kill switch"),
            ("manage_users", "Manage users, roles and sessions"),
            ("manage_exchange_accounts", "Add, rotate and delete exchange accounts"),
            ("enable_live_mode", "Switch a bot to live trading"),
            ("resume_after_kill", "Resume trading after a kill"),
        ]


class SealedTOTPDevice(TOTPDevice):
    """django-otp's TOTP device, with its seed stored only as Vault transit ciphertext.

    `key` holds `vault:v1:...` (73 characters for a 20-byte seed, within the column's 80),
    so a database dump reveals no seed. django-otp's own verification (drift, replay
    protection through `last_t`, throttling) is used unchanged; only `bin_key` differs.
    """

    class Meta:
        proxy = True

    @classmethod
    def create_for(cls, user: User) -> SealedTOTPDevice:
        seed = secrets.token_bytes(20)
        ciphertext = vault.from_settings().transit_encrypt(vault.TOTP_SEED_KEY, seed)
        device: SealedTOTPDevice = cls.objects.create(
            user=user, name="Authenticator app", key=ciphertext, confirmed=False
        )
        return device

    @property
    def bin_key(self) -> bytes:
        return vault.from_settings().transit_decrypt(vault.TOTP_SEED_KEY, self.key)


def _hash_code(salt: str, code: str) -> str:
    # Backup codes are long random strings (about 59 bits), so a salted SHA-256 is enough;
    # a slow password hash would make checking ten of them take seconds.
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def normalize_backup_code(raw: str) -> str:
    return "".join(ch for ch in raw.lower() if ch.isalnum())


class BackupCodeDevice(TimestampMixin, ThrottlingMixin, Device):
    """Single-use backup codes, stored hashed; a django-otp device so login treats it alike."""

    ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
    CODE_LENGTH = 12

    def get_throttle_factor(self) -> int:
        return 1

    def replace_codes(self, count: int) -> list[str]:
        """Delete every old code and return `count` new ones (the only time they exist in clear)."""
        self.codes.all().delete()
        plain = ["".join(secrets.choice(self.ALPHABET) for _ in range(self.CODE_LENGTH)) for _ in range(count)]
        rows = []
        for code in plain:
            salt = secrets.token_hex(8)
            rows.append(BackupCode(device=self, salt=salt, code_hash=_hash_code(salt, code)))
        BackupCode.objects.bulk_create(rows)
        return [f"{c[0:4]}-{c[4:8]}-{c[8:12]}" for c in plain]

    def verify_token(self, token: Any) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        code = normalize_backup_code(str(token))
        with transaction.atomic():
            for row in self.codes.select_for_update().filter(used_at__isnull=True):
                if constant_time_compare(row.code_hash, _hash_code(row.salt, code)):
                    row.used_at = timezone.now()
                    row.save(update_fields=["used_at"])
                    self.throttle_reset(commit=False)
                    self.set_last_used_timestamp(commit=False)
                    self.save()
                    return True
        self.throttle_increment(commit=True)
        return False

    def remaining(self) -> int:
        return int(self.codes.filter(used_at__isnull=True).count())


class BackupCode(models.Model):
    device = models.ForeignKey(BackupCodeDevice, on_delete=models.CASCADE, related_name="codes")
    salt = models.CharField(max_length=32)
    code_hash = models.CharField(max_length=64)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"backup code {self.pk} ({'used' if self.used_at else 'unused'})"


class UserSession(models.Model):
    """A verified login session, for the sessions pages, timeouts and new-IP notices.

    `session_key` is the Django session it mirrors; it is never rendered (pages use `id`).
    """

    class EndReason(models.TextChoices):
        LOGOUT = "logout", "Logged out"
        TERMINATED = "terminated", "Terminated"
        IDLE = "idle", "Idle timeout"
        ABSOLUTE = "absolute", "Maximum session age reached"
        PASSWORD_CHANGED = "password_changed", "Password changed"
        DEACTIVATED = "deactivated", "User deactivated"
        OTP_RESET = "otp_reset", "Two-factor reset"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="console_sessions")
    session_key = models.CharField(max_length=40, unique=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=20, choices=EndReason.choices, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "ended_at"])]

    def __str__(self) -> str:
        return f"session {self.pk} of {self.user_id}"

    @property
    def is_active(self) -> bool:
        return self.ended_at is None
