"""The environment of a botconsole process (worker, web server, command) run as a subprocess by a test.

It points at this test session's servers and at the TEST database, with exactly one Vault token:
the one of the process kind under test.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.harness import Harness


def process_env(
    services: Harness, *, token: str, var_dir: Path, sandbox_url: str = "", **overrides: str
) -> dict[str, str]:
    db = connection.settings_dict
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": "botconsole.settings.local",
        "BOTCONSOLE_VAR_DIR": str(var_dir),
        "SECRET_KEY": settings.SECRET_KEY,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "VAULT_ADDR": services.vault_addr,
        "VAULT_TOKEN": token,
        "SANDBOX_URL": sandbox_url,
        **overrides,
    }
