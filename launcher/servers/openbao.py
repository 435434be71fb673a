"""The embedded OpenBao: raft storage under `<root>/openbao` (never `-dev`), loopback only, no TLS. The first
start initializes it and keeps the unseal key and root token in `<root>/openbao/init.json` (mode 0600);
every start unseals it with them."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from apps.core.files import bao_bin, read_json, write_private
from apps.vault import client as vault
from apps.vault import server as vault_server
from launcher.servers.common import ServiceStartError, Spawn, wait_until


@dataclass
class VaultKeys:
    """What `bao operator init` returned; local use only, kept in a 0600 file."""

    unseal_key: str
    root_token: str


def _config(data: Path, port: int, cluster_port: int) -> str:
    return f"""# Written by botconsole's launcher for local use: loopback only, no TLS.
storage "raft" {{
  path    = "{data}"
  node_id = "botconsole-local"
}}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable     = true
}}
api_addr      = "http://127.0.0.1:{port}"
cluster_addr  = "http://127.0.0.1:{cluster_port}"
disable_mlock = true
ui            = false
"""


def init_and_unseal(addr: str, keys_file: Path) -> VaultKeys:
    if not vault_server.is_initialized(addr):
        result = vault_server.initialize(addr)
        write_private(keys_file, json.dumps(result))
        print(
            f"botconsole: WARNING: OpenBao's unseal key and root token are kept in {keys_file} "
            "(mode 0600) for local use. In production keep them offline; see README.",
            file=sys.stderr,
        )
    stored = read_json(keys_file)
    if not stored:
        raise ServiceStartError("OpenBao", f"it is initialized but {keys_file} with its unseal key is missing", None)
    keys = VaultKeys(unseal_key=stored["unseal_key"], root_token=stored["root_token"])
    vault_server.unseal(addr, keys.unseal_key)
    return keys


def start_openbao(base: Path, port: int, cluster_port: int, spawn: Spawn) -> Callable[[], tuple[str, VaultKeys]]:
    """Launch OpenBao; the returned step waits until it answers, initializes (first start) and unseals it,
    waits until it is active, and returns its VAULT_ADDR and keys."""
    data = base / "data"
    log = base / "openbao.log"
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    addr = f"http://127.0.0.1:{port}"
    write_private(base / "config.hcl", _config(data, port, cluster_port))
    proc = spawn("openbao", [str(bao_bin()), "server", f"-config={base / 'config.hcl'}"], log)
    (base / "openbao.pid").write_text(str(proc.pid))

    def finish() -> tuple[str, VaultKeys]:
        def reachable() -> bool:
            vault.health(addr)
            return True

        def active() -> bool:
            return vault.health(addr) == "active"

        wait_until("OpenBao", reachable, proc, log)
        keys = init_and_unseal(addr, base / "init.json")
        wait_until("OpenBao", active, proc, log)
        return addr, keys

    return finish
