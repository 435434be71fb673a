"""Real backing servers for the test session.

Servers named by DATABASE_URL / REDIS_URL / VAULT_ADDR are used as they are; the others are
started from their pip packages under var/test/, exactly as `make run` starts them, and
stopped when the session ends. With your own Vault, VAULT_BOOTSTRAP_TOKEN must hold an
admin token. Each process role (web, control, fleet) gets its own least-privileged token.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

from apps.vault import client as vault
from apps.vault import server as vault_server
from launcher.embedded import EmbeddedServices, missing_services

ROOT = Path(__file__).resolve().parents[1]


class Harness:
    def __init__(self) -> None:
        self.root = Path(os.environ.get("BOTCONSOLE_TEST_VAR_DIR", ROOT / "var" / "test"))
        self.services: EmbeddedServices | None = None
        self.tokens: dict[str, vault_server.IssuedToken] = {}
        self.admin_token = ""
        self.started = False
        self._lock: IO[str] | None = None
        self._private_root = False

    def _claim_root(self) -> None:
        """Use var/test/ unless another test session holds it; then a private directory.

        Two sessions must not share one set of servers: each stops its servers when it ends.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / "session.lock", "w")  # noqa: SIM115 - held for the whole session
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            self.root = self.root.with_name(f"{self.root.name}-{os.getpid()}")
            self._private_root = True
            return
        self._lock = lock

    def start(self) -> None:
        if self.started:
            return
        missing = missing_services(os.environ)
        if missing:
            self._claim_root()
            self.services = EmbeddedServices(root=self.root, want=missing)
            os.environ.update(self.services.start())
            atexit.register(self.stop)
        if self.services is not None and self.services.vault_keys is not None:
            self.admin_token = self.services.vault_keys.root_token
        else:
            self.admin_token = os.environ.get("VAULT_BOOTSTRAP_TOKEN", "")
            if not self.admin_token:
                raise RuntimeError("VAULT_ADDR names your own Vault: set VAULT_BOOTSTRAP_TOKEN to an admin token")
        vault_server.bootstrap(self.vault_addr, self.admin_token)
        self.tokens = {
            process: vault_server.create_process_token(self.vault_addr, self.admin_token, process)
            for process in vault_server.PROCESS_ROLES
        }
        self.started = True

    @property
    def vault_addr(self) -> str:
        return os.environ["VAULT_ADDR"]

    @property
    def unseal_key(self) -> str:
        if self.services is None or self.services.vault_keys is None:
            raise RuntimeError("the unseal key is known only for the embedded OpenBao")
        return self.services.vault_keys.unseal_key

    def stop(self) -> None:
        for issued in self.tokens.values():
            with contextlib.suppress(vault.VaultError):
                vault_server.revoke_accessor(self.vault_addr, self.admin_token, issued.accessor)
        self.tokens.clear()
        if self.services is not None:
            self.services.stop()
            self.services = None
        if self._private_root:
            shutil.rmtree(self.root, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self.started = False


harness = Harness()
