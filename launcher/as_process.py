"""Run a `manage.py` command by hand against `make run`'s servers, with one process kind's Vault token.

`make run` gives each process its own least-privileged token. A command run from a shell needs one
too: `audit_verify` checks signatures with the control worker's transit key, `killswitch` reads the
exchange keys to cancel orders. Locally the root token sits in var/openbao/init.json (mode 0600);
this mints a token of the named kind from it — the root token is never passed on —, runs the
command with that token only, and revokes it afterwards:

    ./.venv/bin/python -m launcher.as_process control audit_verify
    ./.venv/bin/python -m launcher.as_process control killswitch --reason "suspected key leak"

In production each unit already has its AppRole; use deploy/bin/botconsole-manage there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botconsole.settings.local")
    import django
    from django.conf import settings

    django.setup()  # the backup helpers below import models

    from apps.ops.backup import BackupError, local_keys_file, read_token_file  # late: after the settings are chosen
    from apps.vault import server as vault_server  # late: after the settings are chosen

    if len(argv) < 2 or argv[0] not in vault_server.PROCESS_ROLES:
        kinds = ", ".join(sorted(vault_server.PROCESS_ROLES))
        print(f"usage: python -m launcher.as_process {{{kinds}}} COMMAND [ARGS...]", file=sys.stderr)
        return 2
    process, command = argv[0], argv[1:]
    try:
        admin_token = read_token_file(local_keys_file())
    except BackupError as exc:
        print(f"no local Vault root token ({exc}); is this a `make run` checkout?", file=sys.stderr)
        return 2
    issued = vault_server.create_process_token(settings.VAULT_ADDR, admin_token, process)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_") or k == "VAULT_ADDR"}
    env["VAULT_TOKEN"] = issued.token
    try:
        return subprocess.run([sys.executable, str(BASE_DIR / "manage.py"), *command], env=env, cwd=BASE_DIR).returncode
    finally:
        vault_server.revoke_accessor(settings.VAULT_ADDR, admin_token, issued.accessor)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
