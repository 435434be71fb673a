"""Putting a backup of apps.ops.backup back (`manage.py restore`): check its files, restore the database
and OpenBao, unseal the restored OpenBao, and put the audit checkpoint file back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import DatabaseError, connection

from apps.audit.checkpoints import checkpoint_file
from apps.audit.models import AuditEntry
from apps.bots.models import Bot
from apps.core.files import read_json
from apps.exchanges.models import ExchangeAccount
from apps.ops.backup import (
    CHECKPOINTS_FILE,
    DATABASE_FILE,
    FORMAT,
    MANIFEST,
    PG_TIMEOUT_S,
    VAULT_FILE,
    BackupError,
    file_sha256,
    pg_connection,
    pg_error,
    pg_tool,
)
from apps.vault import client as vault
from apps.vault import server as vault_server


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
    tool = pg_tool("pg_restore")
    args, env, name = pg_connection()
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
        raise pg_error("pg_restore", result.stderr)


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
