"""The one module that talks to OpenBao/Vault (through hvac).

Every other module calls these functions and sees only domain errors: `VaultForbidden`
when a policy refuses, `VaultUnavailable` when the server cannot answer, `VaultError`
otherwise. Functions that take `addr` and `token` explicitly are used by the launcher and
the bootstrap, before Django settings exist; `from_settings()` builds the client of the
current process from its own settings (its own, least-privileged token).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

TIMEOUT_S = 5
# Keep-alive connections a client keeps to Vault: a kill reads every account's key at once from as many threads,
# and with requests' default of 10 the others opened a connection each and threw it away.
POOL_MAXSIZE = 64
KV_MOUNT = "kv"
TRANSIT_MOUNT = "transit"
AUDIT_CHECKPOINT_KEY = "audit-checkpoint"
# Encrypts TOTP seeds so the database holds only ciphertext (apps.accounts.models).
TOTP_SEED_KEY = "totp-seed"
EXCHANGE_SECRETS_PREFIX = "exchange-accounts"


class VaultError(Exception):
    """Vault refused or failed; the message never contains a secret."""


class VaultForbidden(VaultError):
    """The token's policy does not allow this path (HTTP 403)."""


class VaultUnavailable(VaultError):
    """Vault is unreachable, sealed or not initialized."""


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except hvac.exceptions.Forbidden as exc:
        raise VaultForbidden("permission denied by Vault policy") from exc
    except hvac.exceptions.VaultDown as exc:
        # What Vault answers (503) while it is sealed: say so, it is what an operator must act on.
        raise VaultUnavailable("Vault is sealed (it answers 503 until an operator unseals it)") from exc
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise VaultUnavailable(f"Vault is unavailable ({type(exc).__name__})") from exc
    except hvac.exceptions.VaultError as exc:
        raise VaultError(f"Vault error ({type(exc).__name__})") from exc


def _client(addr: str, token: str | None = None, timeout: float = TIMEOUT_S) -> hvac.Client:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_MAXSIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return hvac.Client(url=addr, token=token, timeout=timeout, session=session)


# -- server state (unauthenticated) -------------------------------------------------------


def health(addr: str) -> str:
    """'uninitialized', 'sealed', 'standby' or 'active'. Raises VaultUnavailable if unreachable."""
    with _errors():
        # Ask for 200 in every state so the body is always JSON we can read.
        status = _client(addr).sys.read_health_status(
            method="GET", standby_ok=True, sealed_code=200, uninit_code=200, standby_code=200
        )
    if not isinstance(status, dict):
        raise VaultUnavailable("Vault answered its health check with something other than JSON")
    if not status.get("initialized"):
        return "uninitialized"
    if status.get("sealed"):
        return "sealed"
    return "standby" if status.get("standby") else "active"


def policies_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "deploy" / "openbao" / "policies"


# -- bot identities (fleet supervisor and bot workers) ------------------------------------------

# Every call the fleet makes under auth/approle/role/bot-* must be response-wrapped: its policy
# demands it (min_wrapping_ttl), so that the one response that carries a secret, a new SecretID,
# can only ever reach the fleet wrapped. Writes answer 204, so wrapping changes nothing for them.
FLEET_WRAP_TTL = "30s"
SECRET_ID_WRAP_TTL_S = 60
BOT_TOKEN_TTL = "15m"  # noqa: S105 - durations, not secrets
BOT_TOKEN_MAX_TTL = "24h"  # noqa: S105
BOT_SECRET_ID_TTL = "60s"  # noqa: S105


def bot_role(bot_id: int) -> str:
    return f"bot-{bot_id}"


def bot_secret_id_path(bot_id: int) -> str:
    """The creation path a bot worker insists on before it unwraps its SecretID."""
    return f"auth/approle/role/{bot_role(bot_id)}/secret-id"


def bot_policy_text(account_id: str) -> str:
    """The bot-<id> policy: read one exchange account's secret, nothing else."""
    text = (policies_dir() / "bot.hcl.tmpl").read_text()
    # Account ids are UUIDs; refuse anything that could widen the path (a "*" or "+", "..", a quote).
    if not account_id or not all(c.isalnum() or c == "-" for c in account_id):
        raise VaultError("refusing to render a bot policy for a malformed account id")
    return text.replace("{account_id}", account_id)


@dataclass(frozen=True)
class WrappedSecretId:
    """A response-wrapped SecretID: the wrapping token is single-use and short-lived."""

    wrapping_token: str
    wrapping_accessor: str
    secret_id_accessor: str
    creation_path: str

    def __repr__(self) -> str:  # keep the wrapping token out of reprs and logs
        return f"WrappedSecretId(secret_id_accessor={self.secret_id_accessor!r}, path={self.creation_path!r})"


@dataclass(frozen=True)
class LoginToken:
    token: str
    accessor: str
    policies: list[str]
    ttl_s: int
    renewable: bool

    def __repr__(self) -> str:
        return f"LoginToken(accessor={self.accessor!r}, policies={self.policies!r}, ttl_s={self.ttl_s})"


def wrapping_lookup(addr: str, wrapping_token: str) -> dict[str, Any]:
    """What a wrapping token wraps (creation path, TTL) without consuming it."""
    with _errors():
        result = _client(addr).adapter.post("/v1/sys/wrapping/lookup", json={"token": wrapping_token})
    return dict(result["data"])


def unwrap(addr: str, wrapping_token: str) -> dict[str, Any]:
    """Consume a wrapping token and return the wrapped response's data (a second unwrap fails)."""
    with _errors():
        result = _client(addr, wrapping_token).adapter.post("/v1/sys/wrapping/unwrap")
    return dict(result["data"])


def approle_login(addr: str, role_id: str, secret_id: str) -> LoginToken:
    with _errors():
        result = _client(addr).auth.approle.login(role_id=role_id, secret_id=secret_id, use_token=False)
    auth = result["auth"]
    return LoginToken(
        token=auth["client_token"],
        accessor=auth["accessor"],
        policies=list(auth["policies"]),
        ttl_s=int(auth["lease_duration"]),
        renewable=bool(auth["renewable"]),
    )


def token_lookup_accessor(addr: str, token: str, accessor: str) -> dict[str, Any]:
    with _errors():
        result = _client(addr, token).auth.token.lookup_accessor(accessor)
    return dict(result["data"])


# -- runtime client of this process ------------------------------------------------------------


class ProcessVault:
    """The current process's Vault identity, from its own settings."""

    def __init__(self, addr: str, token: str) -> None:
        self.addr = addr
        self._client = _client(addr, token)

    def __repr__(self) -> str:
        return f"ProcessVault(addr={self.addr!r})"

    def kv_write(self, path: str, data: dict[str, str]) -> int:
        """Write a new version of a KV v2 secret; returns the version number."""
        with _errors():
            result = self._client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point=KV_MOUNT)
        return int(result["data"]["version"])

    def kv_read(self, path: str) -> dict[str, Any]:
        with _errors():
            result = self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=KV_MOUNT, raise_on_deleted_version=True
            )
        return dict(result["data"]["data"])

    def kv_destroy(self, path: str) -> None:
        """Delete a secret's metadata and every version (nothing can be recovered)."""
        with _errors():
            self._client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=KV_MOUNT)

    def kv_list(self, path: str) -> list[str]:
        """Names under a folder of kv/ (empty when there is none)."""
        try:
            with _errors():
                result = self._client.secrets.kv.v2.list_secrets(path=path, mount_point=KV_MOUNT)
        except VaultError as exc:
            if isinstance(exc.__cause__, hvac.exceptions.InvalidPath):
                return []
            raise
        return list(result["data"]["keys"])

    def kv_subkeys(self, path: str) -> dict[str, Any]:
        """The key names of a secret without its values (what the web tier may see)."""
        with _errors():
            result = self._client.adapter.get(f"/v1/{KV_MOUNT}/subkeys/{path}")
        return dict(result["data"]["subkeys"])

    def transit_encrypt(self, key: str, plaintext: bytes) -> str:
        with _errors():
            result = self._client.secrets.transit.encrypt_data(
                name=key, plaintext=base64.b64encode(plaintext).decode(), mount_point=TRANSIT_MOUNT
            )
        return str(result["data"]["ciphertext"])

    def transit_decrypt(self, key: str, ciphertext: str) -> bytes:
        with _errors():
            result = self._client.secrets.transit.decrypt_data(
                name=key, ciphertext=ciphertext, mount_point=TRANSIT_MOUNT
            )
        return base64.b64decode(result["data"]["plaintext"])

    def transit_sign(self, key: str, message: bytes) -> str:
        """Sign `message` with a transit key; returns the signature ("vault:v<version>:...")."""
        with _errors():
            result = self._client.secrets.transit.sign_data(
                name=key, hash_input=base64.b64encode(message).decode(), mount_point=TRANSIT_MOUNT
            )
        return str(result["data"]["signature"])

    def transit_verify_many(self, key: str, items: list[tuple[bytes, str]], batch: int = 500) -> list[bool]:
        """Check (message, signature) pairs with a transit key, in batches; a malformed signature is False."""
        results: list[bool] = []
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            body = {"batch_input": [{"input": base64.b64encode(m).decode(), "signature": s} for m, s in chunk]}
            with _errors():
                answer = self._client.adapter.post(f"/v1/{TRANSIT_MOUNT}/verify/{key}", json=body)
            results.extend(bool(r.get("valid")) and not r.get("error") for r in answer["data"]["batch_results"])
        return results

    def token_policies(self) -> list[str]:
        with _errors():
            return list(self._client.auth.token.lookup_self()["data"]["policies"])

    def renew_self(self) -> None:
        with _errors():
            self._client.auth.token.renew_self()

    # -- fleet supervisor: bot roles (its policy requires wrapping under auth/approle/role/bot-*) --

    def _wrapped(self, method: str, path: str, **kwargs: Any) -> Any:
        with _errors():
            return self._client.adapter.request(method, f"/v1/{path}", wrap_ttl=FLEET_WRAP_TTL, **kwargs)

    def policy_write(self, name: str, text: str) -> None:
        with _errors():
            self._client.sys.create_or_update_acl_policy(name=name, policy=text)

    def policy_delete(self, name: str) -> None:
        with _errors():
            self._client.sys.delete_acl_policy(name=name)

    def bot_role_write(self, bot_id: int) -> None:
        """AppRole bot-<id> with the policy bot-<id>: short renewable tokens, single-use SecretIDs."""
        role = bot_role(bot_id)
        self._wrapped(
            "POST",
            f"auth/approle/role/{role}",
            json={
                "token_policies": [role],
                "token_ttl": BOT_TOKEN_TTL,
                "token_max_ttl": BOT_TOKEN_MAX_TTL,
                "token_type": "service",  # service tokens can be renewed and revoked by accessor
                "secret_id_num_uses": 1,
                "secret_id_ttl": BOT_SECRET_ID_TTL,
                "bind_secret_id": True,
            },
        )

    def bot_role_delete(self, bot_id: int) -> None:
        # With the role gone its tokens can no longer be renewed (AppRole checks on renewal).
        self._wrapped("DELETE", f"auth/approle/role/{bot_role(bot_id)}")

    def bot_role_id(self, bot_id: int) -> str:
        """The role id (not a secret on its own); read wrapped, as the policy demands, then unwrapped."""
        result = self._wrapped("GET", f"auth/approle/role/{bot_role(bot_id)}/role-id")
        return str(unwrap(self.addr, result["wrap_info"]["token"])["role_id"])

    def bot_secret_id_wrapped(self, bot_id: int, wrap_ttl_s: int = SECRET_ID_WRAP_TTL_S) -> WrappedSecretId:
        """Issue a SecretID that only its recipient can unwrap; we keep its accessor to destroy it."""
        with _errors():
            result = self._client.adapter.request(
                "POST", f"/v1/{bot_secret_id_path(bot_id)}", wrap_ttl=f"{int(wrap_ttl_s)}s"
            )
        info = result["wrap_info"]
        return WrappedSecretId(
            wrapping_token=info["token"],
            wrapping_accessor=info["accessor"],
            secret_id_accessor=info.get("wrapped_accessor", ""),
            creation_path=info["creation_path"],
        )

    def bot_secret_id_destroy(self, bot_id: int, secret_id_accessor: str) -> None:
        self._wrapped(
            "POST",
            f"auth/approle/role/{bot_role(bot_id)}/secret-id-accessor/destroy",
            json={"secret_id_accessor": secret_id_accessor},
        )

    # -- control worker (kill switch): take a bot's SecretIDs away; it never issues one --------

    def bot_secret_id_accessors(self, bot_id: int) -> list[str]:
        """Accessors (never the SecretIDs) of bot-<id>'s unused SecretIDs; empty when none or no role."""
        try:
            with _errors():
                result = self._client.adapter.list(f"/v1/auth/approle/role/{bot_role(bot_id)}/secret-id")
        except VaultError as exc:
            if isinstance(exc.__cause__, hvac.exceptions.InvalidPath | hvac.exceptions.InvalidRequest):
                return []
            raise
        return [str(k) for k in ((result or {}).get("data") or {}).get("keys") or []]

    def bot_secret_ids_destroy(self, bot_id: int) -> int:
        """Destroy every unused SecretID of bot-<id> (by accessor); returns how many."""
        accessors = self.bot_secret_id_accessors(bot_id)
        for accessor in accessors:
            with _errors():
                self._client.adapter.post(
                    f"/v1/auth/approle/role/{bot_role(bot_id)}/secret-id-accessor/destroy",
                    json={"secret_id_accessor": accessor},
                )
        return len(accessors)

    def token_revoke_accessor(self, accessor: str) -> None:
        with _errors():
            self._client.auth.token.revoke_accessor(accessor)

    def token_lookup_accessor(self, accessor: str) -> dict[str, Any]:
        with _errors():
            return dict(self._client.auth.token.lookup_accessor(accessor)["data"])

    def token_lookup_self(self) -> dict[str, Any]:
        with _errors():
            return dict(self._client.auth.token.lookup_self()["data"])

    def token_renew_self(self) -> int:
        """Renew this token; returns its new TTL in seconds."""
        with _errors():
            result = self._client.auth.token.renew_self()
        return int(result["auth"]["lease_duration"])


def from_settings() -> ProcessVault:
    """The Vault client of this process, built from VAULT_ADDR and its own credentials."""
    from django.conf import settings

    token = settings.VAULT_TOKEN
    if not token and settings.VAULT_ROLE_ID and settings.VAULT_SECRET_ID:
        with _errors():
            login = _client(settings.VAULT_ADDR).auth.approle.login(
                role_id=settings.VAULT_ROLE_ID, secret_id=settings.VAULT_SECRET_ID
            )
        token = login["auth"]["client_token"]
    if not token:
        raise VaultUnavailable("this process has no Vault credentials (VAULT_TOKEN or VAULT_ROLE_ID/SECRET_ID)")
    return ProcessVault(settings.VAULT_ADDR, token)
