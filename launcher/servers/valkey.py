"""The embedded Valkey (Celery's broker and the Channels layer): loopback only, password auth, append-only
file under `<root>/valkey`. The password lives in 0600 files, never on a command line `ps` shows."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path

from apps.core.files import read_json, valkey_bin, write_private
from launcher.servers.common import Spawn, wait_until


def _config(base: Path, port: int, password: str) -> str:
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            f'dir "{base}"',
            f'pidfile "{base / "valkey.pid"}"',
            "appendonly yes",
            'save ""',
            "daemonize no",
            f'requirepass "{password}"',
            "",
        ]
    )


def start_valkey(base: Path, port: int, spawn: Spawn) -> Callable[[], str]:
    """Launch Valkey; the returned step waits until it answers PING and returns its REDIS_URL."""
    log = base / "valkey.log"
    conf = base / "valkey.conf"
    base.mkdir(parents=True, exist_ok=True)
    password = read_json(base / "password.json").get("password") or secrets.token_urlsafe(24)
    write_private(base / "password.json", json.dumps({"password": password}))
    # The password goes in a 0600 config file, never on the command line where `ps` shows it.
    write_private(conf, _config(base, port, password))
    proc = spawn("valkey", [str(valkey_bin()), str(conf)], log)

    def finish() -> str:
        import redis

        def ready() -> bool:
            client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()

        wait_until("Valkey", ready, proc, log)
        return f"redis://:{password}@127.0.0.1:{port}/0"

    return finish
