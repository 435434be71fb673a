"""Test users: people with a password and (usually) an enrolled authenticator, and logging them in."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.test import Client
from django_otp.oath import TOTP

from apps.accounts.models import SealedTOTPDevice, User
from apps.accounts.services import user_set_role

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse

PASSWORD = "correct horse battery staple"


@dataclass
class Person:
    user: User
    seed: bytes | None

    def code(self, steps_ahead: int = 0) -> str:
        """The TOTP code an authenticator app would show (steps_ahead=1: the next 30 s window)."""
        assert self.seed is not None
        # django-otp learns the clock drift of a device from accepted codes; count from where the
        # server now is, or a login just across a 30 s boundary would push step-ups out of tolerance.
        drift = SealedTOTPDevice.objects.filter(user=self.user).values_list("drift", flat=True).first() or 0
        totp = TOTP(self.seed, step=30, t0=0, digits=6, drift=drift)
        totp.time = time.time() + 30 * steps_ahead
        return f"{totp.token():06d}"

    def wrong_code(self) -> str:
        valid = {self.code(k) for k in (-1, 0, 1)}
        return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def make_person(username: str, role: str = "viewer", enrolled: bool = True, email: str = "") -> Person:
    user = User.objects.create_user(username=username, password=PASSWORD, email=email or f"{username}@example.test")
    user_set_role(user=user, role=role, actor="system:test")
    seed = None
    if enrolled:
        device = SealedTOTPDevice.create_for(user)
        device.confirmed = True
        device.save()
        seed = device.bin_key
    return Person(user, seed)


def password_login(client: Client, person: Person, ip: str = "127.0.0.1") -> _MonkeyPatchedWSGIResponse:
    return client.post("/accounts/login/", {"username": person.user.username, "password": PASSWORD}, REMOTE_ADDR=ip)


def full_login(client: Client, person: Person, ip: str = "127.0.0.1", steps_ahead: int = 0) -> None:
    password_login(client, person, ip)
    response = client.post("/accounts/otp/", {"code": person.code(steps_ahead)}, REMOTE_ADDR=ip)
    assert response.status_code == 302 and response["Location"] == "/", response.content[:500]
