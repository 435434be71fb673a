"""Restore a backup into fresh embedded servers (the servers of `make run`, under var/).

    .venv/bin/python -m launcher.restore_local var.before-restore/backups/<time> --keys /safe/init.json

`make run` must be stopped and var/ must hold no servers' data (move it aside first). This starts
fresh PostgreSQL, Valkey and OpenBao under var/, runs `manage.py restore` into them with the fresh
OpenBao's root token, unseals the restored OpenBao with the original keys (--keys: the init.json
of the OpenBao the backup was taken from, which a backup never holds), keeps those keys as
var/openbao/init.json so that `make run` opens it from then on, and stops the servers.

Run as a module; it does not import Django itself (the restore runs in a child process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from apps.core.files import read_json, write_private
from apps.vault import client as vault
from launcher.embedded import EmbeddedServices, ServiceStartError

BASE_DIR = Path(__file__).resolve().parents[1]
SERVER_VARIABLES = ("DATABASE_URL", "REDIS_URL", "VAULT_ADDR")


def fail(message: str) -> int:
    print(f"botconsole: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.restore_local", description=__doc__.split("\n")[0])
    parser.add_argument("backup", type=Path, help="the backup's directory (it holds manifest.json)")
    parser.add_argument("--keys", type=Path, required=True, help="init.json of the OpenBao the backup came from")
    options = parser.parse_args(argv)

    var_dir = Path(os.environ.get("BOTCONSOLE_VAR_DIR", BASE_DIR / "var")).resolve()
    keys = read_json(options.keys)
    refusal = _refusal(var_dir, options.keys, keys)
    if refusal:
        return fail(refusal)

    services = EmbeddedServices(root=var_dir)
    try:
        urls = services.start()
    except ServiceStartError as exc:
        return fail(str(exc))
    try:
        assert services.vault_keys is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
        env.update(urls)
        env.setdefault("DJANGO_SETTINGS_MODULE", "botconsole.settings.local")
        # The fresh OpenBao's root token lets the restore replace its storage; the original
        # keys unseal the result and, as its root token, check the audit signatures.
        env.update(BOTCONSOLE_VAR_DIR=str(var_dir), VAULT_OPERATOR_TOKEN=services.vault_keys.root_token)
        command = [
            sys.executable,
            str(BASE_DIR / "manage.py"),
            "restore",
            str(options.backup.resolve()),
            "--yes",
            "--unseal-key-file",
            str(options.keys.resolve()),
        ]
        code = subprocess.run(command, env=env, cwd=BASE_DIR, check=False).returncode
        if _restored(urls["VAULT_ADDR"], keys["root_token"]):
            # From now on only the original keys open this OpenBao.
            write_private(
                var_dir / "openbao" / "init.json",
                json.dumps({"unseal_key": keys["unseal_key"], "root_token": keys["root_token"]}),
            )
            print(f"botconsole: {var_dir / 'openbao' / 'init.json'} now holds the original OpenBao keys")
        return code
    finally:
        services.stop()


def _refusal(var_dir: Path, keys_file: Path, keys: dict[str, Any]) -> str | None:
    """Why this restore must not start (servers named, `make run` running, data in the way, bad keys), or None."""
    named = [name for name in SERVER_VARIABLES if os.environ.get(name)]
    if named:
        return f"{', '.join(named)} name your own servers: restore into them with `manage.py restore`"
    if (var_dir / "run" / "services.env").exists():
        return "`make run` is running (var/run/services.env exists): stop it first"
    if any((var_dir / server / "data").exists() for server in ("postgres", "openbao")):
        return f"{var_dir} already holds servers' data: move it aside (e.g. `mv var var.before-restore`)"
    if not keys.get("unseal_key") or not keys.get("root_token"):
        return f"{keys_file} is not an OpenBao init.json (it needs unseal_key and root_token)"
    return None


def _restored(addr: str, original_root_token: str) -> bool:
    """Whether this OpenBao now holds the backed-up storage (the original root token works)."""
    with contextlib.suppress(vault.VaultError):
        vault.ProcessVault(addr, original_root_token).token_lookup_self()
        return True
    return False


if __name__ == "__main__":
    sys.exit(main())
