"""Tests: real PostgreSQL, Valkey and OpenBao.

When DATABASE_URL / REDIS_URL / VAULT_ADDR are unset, the test harness starts the
embedded servers under var/test/ (the same way `make run` does) before settings are read,
and stops them when the test session ends.
"""

import os

from tests.harness import harness

harness.start()
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")

from .base import *  # noqa: E402,F403

DEBUG = False
WHITENOISE_USE_FINDERS = True  # as under `make run` (local.py)
STATIC_ROOT = None
INSTALLED_APPS = ["tests.support", *INSTALLED_APPS, "apps.sandbox"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; tests only
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
VAULT_TOKEN = harness.tokens["web"].token
