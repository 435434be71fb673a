"""Tests: real PostgreSQL, Valkey and OpenBao.

When DATABASE_URL / REDIS_URL / VAULT_ADDR are unset, the test harness starts the
embedded servers under var/test/ (the same way `make run` does) before settings are read,
and stops them when the test session ends.
"""

import os
import sys

from tests.harness import harness


def _xdist_controller() -> bool:
    """Whether this is pytest-xdist's controller (`make test` runs `pytest -n 2`): it runs no test itself.

    Each worker starts its own servers; the controller starts none, and the placeholders it reads its
    settings with never reach the workers' environment.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") or "pytest" not in (sys.argv[0] if sys.argv else ""):
        return False
    return _argv_workers() > 0


def _argv_workers() -> int:
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        value = None
        if arg in ("-n", "--numprocesses") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--numprocesses="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-n") and arg[2:]:
            value = arg[2:]
        if value is not None:
            return 2 if value in ("auto", "logical") else (int(value) if value.isdigit() else 0)
    return 0


CONTROLLER = _xdist_controller()
_PLACEHOLDERS = {
    "DATABASE_URL": "postgres://xdist-controller@127.0.0.1:9/none",
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "VAULT_ADDR": "http://127.0.0.1:9",
}
if CONTROLLER:
    _PLACEHOLDERS = {k: v for k, v in _PLACEHOLDERS.items() if k not in os.environ}
    os.environ.update(_PLACEHOLDERS)
else:
    harness.start()
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")

from .base import *  # noqa: E402,F403

if CONTROLLER:
    for _name in _PLACEHOLDERS:
        os.environ.pop(_name, None)

DEBUG = False
WHITENOISE_USE_FINDERS = True  # as under `make run` (local.py)
STATIC_ROOT = None
INSTALLED_APPS = ["tests.support", *INSTALLED_APPS, "apps.sandbox"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
VAULT_TOKEN = "" if CONTROLLER else harness.tokens["web"].token
