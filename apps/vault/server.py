"""OpenBao/Vault as its administrator sees it: initialise, unseal, bootstrap, mint process tokens, snapshots.

Used by the launcher (`make run`), the test harness, `manage.py vault_bootstrap` and backup/restore, with
an admin or operator token handed in explicitly; never by a running console process, which holds only its
own least-privileged token (apps.vault.client).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import hvac.exceptions

from apps.vault.client import (
    AUDIT_CHECKPOINT_KEY,
    KV_MOUNT,
    TOTP_SEED_KEY,
    TRANSIT_MOUNT,
    VaultError,
    VaultForbidden,
    VaultUnavailable,
    _client,
    _errors,
    policies_dir,
)

# Policies shipped as HCL in deploy/openbao/policies/; bot-<id> policies are rendered from
# the bot template when a bot starts.
STATIC_POLICIES = ("botconsole-web", "botconsole-control", "botconsole-fleet", "botconsole-backup")
BACKUP_POLICY = "botconsole-backup"  # an operator's token for `manage.py backup` (raft snapshot only)
PROCESS_ROLES = {"web": "botconsole-web", "control": "botconsole-control", "fleet": "botconsole-fleet"}


def is_initialized(addr: str) -> bool:
    with _errors():
        return bool(_client(addr).sys.is_initialized())


def initialize(addr: str) -> dict[str, str]:
    """Initialize with one key share (local use only); returns the unseal key and root token."""
    with _errors():
        # Raft storage writes and syncs its keyring on init; that can take several seconds.
        result = _client(addr, timeout=60).sys.initialize(secret_shares=1, secret_threshold=1)
    return {"unseal_key": result["keys_base64"][0], "root_token": result["root_token"]}


def unseal(addr: str, unseal_key: str) -> None:
    with _errors():
        _client(addr, timeout=60).sys.submit_unseal_key(key=unseal_key)


def seal(addr: str, token: str) -> None:
    with _errors():
        _client(addr, token).sys.seal()


# -- backup and restore (an operator's token: botconsole-backup policy, or the root token) ------

SNAPSHOT_TIMEOUT_S = 300
_SNAPSHOT_CHUNK = 1 << 20


def server_info(addr: str) -> dict[str, str]:
    """The server's version and cluster id (empty while sealed), from its unauthenticated health."""
    with _errors():
        status = _client(addr).sys.read_health_status(
            method="GET", standby_ok=True, sealed_code=200, uninit_code=200, standby_code=200
        )
    if not isinstance(status, dict):
        raise VaultUnavailable("Vault answered its health check with something other than JSON")
    return {"version": str(status.get("version") or ""), "cluster_id": str(status.get("cluster_id") or "")}


def raft_snapshot(addr: str, token: str, path: Path) -> str:
    """Stream a raft snapshot of the whole storage to `path` (created 0600); returns its SHA-256.

    The snapshot holds the barrier-encrypted data and keyring: it is useless without the
    unseal key, which it does not contain.
    """
    digest = hashlib.sha256()
    with _errors():
        response = _client(addr, token, timeout=SNAPSHOT_TIMEOUT_S).sys.take_raft_snapshot()
        try:
            if response.status_code != 200:
                _raise_for_status(response.status_code)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                for chunk in response.iter_content(_SNAPSHOT_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                out.flush()
                os.fsync(out.fileno())
        finally:
            response.close()
    return digest.hexdigest()


def raft_snapshot_restore(addr: str, token: str, path: Path, *, force: bool = True) -> None:
    """Replace the whole storage with a snapshot. `force` accepts a snapshot of another cluster
    (a restore into fresh servers); OpenBao then needs the unseal key of the snapshot's cluster.
    """
    with _errors(), path.open("rb") as snapshot:
        raft = _client(addr, token, timeout=SNAPSHOT_TIMEOUT_S).sys
        # A file object: requests streams it instead of loading the snapshot into memory.
        if force:
            raft.force_restore_raft_snapshot(snapshot)
        else:
            raft.restore_raft_snapshot(snapshot)


def _raise_for_status(status: int) -> None:
    if status == 403:
        raise VaultForbidden("permission denied by Vault policy")
    if status in (429, 501, 503):
        raise VaultUnavailable(f"Vault is unavailable (HTTP {status})")
    raise VaultError(f"Vault error (HTTP {status})")


# -- bootstrap (admin token) ------------------------------------------------------------------


def bootstrap(addr: str, admin_token: str) -> list[str]:
    """Idempotently set up mounts, the transit key, AppRole and the HCL policies.

    Returns a list of what changed (empty when everything was already in place).
    """
    changed: list[str] = []
    client = _client(addr, admin_token)
    with _errors():
        mounts = client.sys.list_mounted_secrets_engines()["data"]
        if f"{KV_MOUNT}/" not in mounts:
            client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
            changed.append("mounted kv v2 at kv/")
        if f"{TRANSIT_MOUNT}/" not in mounts:
            client.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
            changed.append("mounted transit at transit/")
        try:
            client.secrets.transit.read_key(name=AUDIT_CHECKPOINT_KEY, mount_point=TRANSIT_MOUNT)
        except hvac.exceptions.InvalidPath:
            client.secrets.transit.create_key(
                name=AUDIT_CHECKPOINT_KEY, key_type="ed25519", exportable=False, mount_point=TRANSIT_MOUNT
            )
            changed.append(f"created transit key {AUDIT_CHECKPOINT_KEY} (ed25519, not exportable)")
        try:
            client.secrets.transit.read_key(name=TOTP_SEED_KEY, mount_point=TRANSIT_MOUNT)
        except hvac.exceptions.InvalidPath:
            client.secrets.transit.create_key(
                name=TOTP_SEED_KEY, key_type="aes256-gcm96", exportable=False, mount_point=TRANSIT_MOUNT
            )
            changed.append(f"created transit key {TOTP_SEED_KEY} (aes256-gcm96, not exportable)")
        if "approle/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("approle")
            changed.append("enabled AppRole auth")
        existing = set(client.sys.list_acl_policies()["data"]["keys"])
        for name in STATIC_POLICIES:
            text = (policies_dir() / f"{name}.hcl").read_text()
            current = client.sys.read_acl_policy(name)["data"]["policy"] if name in existing else None
            if current != text:
                client.sys.create_or_update_acl_policy(name=name, policy=text)
                changed.append(f"wrote policy {name}")
        for policy in PROCESS_ROLES.values():
            # Production processes log in with these AppRoles (role id + secret id from the
            # operator); token lifetime is short and renewable.
            client.auth.approle.create_or_update_approle(
                role_name=policy,
                token_policies=[policy],
                token_ttl="1h",  # noqa: S106 - a duration, not a secret
                token_max_ttl="24h",  # noqa: S106
                secret_id_ttl="0",  # noqa: S106
            )
    return changed


def create_process_token(addr: str, admin_token: str, process: str) -> IssuedToken:
    """Mint an orphan, periodic token holding only the policy of one process kind."""
    policy = PROCESS_ROLES[process]
    with _errors():
        result = _client(addr, admin_token).auth.token.create_orphan(
            policies=[policy],
            period="24h",
            display_name=f"botconsole-{process}",
            renewable=True,
            meta={"process": process},
        )
    auth = result["auth"]
    return IssuedToken(token=auth["client_token"], accessor=auth["accessor"], policies=auth["policies"])


def create_backup_token(addr: str, admin_token: str, ttl: str = "1h") -> IssuedToken:
    """An orphan token holding only the botconsole-backup policy (what `bao token create` would give)."""
    with _errors():
        result = _client(addr, admin_token).auth.token.create_orphan(
            policies=[BACKUP_POLICY], ttl=ttl, display_name="botconsole-backup", renewable=False
        )
    auth = result["auth"]
    return IssuedToken(token=auth["client_token"], accessor=auth["accessor"], policies=auth["policies"])


def revoke_accessor(addr: str, admin_token: str, accessor: str) -> None:
    with _errors():
        _client(addr, admin_token).auth.token.revoke_accessor(accessor)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    accessor: str
    policies: list[str]

    def __repr__(self) -> str:  # keep the token out of reprs, tracebacks and logs
        return f"IssuedToken(accessor={self.accessor!r}, policies={self.policies!r})"
