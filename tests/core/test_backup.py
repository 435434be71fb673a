"""Backup and restore: a backup of this session's real servers, restored into FRESH real servers.

The restore goes the way an operator's does: `python -m launcher.restore_local` starts fresh
embedded PostgreSQL, Valkey and OpenBao in a directory of their own and runs `manage.py restore`
into them. The test then starts those servers again (as the next `make run` would), checks the
audit log and a Vault secret there, and tampers with the restored log to see it caught.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.audit.checkpoints import audit_checkpoint_create
from apps.audit.models import AuditEntry
from apps.audit.services import record
from apps.core.files import write_private
from apps.ops.backup import CHECKPOINTS_FILE, DATABASE_FILE, MANIFEST, VAULT_FILE, file_sha256
from apps.vault import client as vault
from apps.vault import server as vault_server
from launcher.embedded import EmbeddedServices
from tests.harness import Harness
from tests.processes import process_env

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
SECRET_PREFIX = "backup-test"


@pytest.fixture
def checkpoints(settings: Any, tmp_path: Path) -> Path:
    """This test's own checkpoint file: the one under var/ belongs to `make run`."""
    path = tmp_path / "audit" / "checkpoints.jsonl"
    settings.AUDIT_CHECKPOINT_FILE = path
    return path


@pytest.fixture
def backup_token(services: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A token with only the botconsole-backup policy, as an operator would give `make backup`."""
    issued = vault_server.create_backup_token(services.vault_addr, services.admin_token)
    monkeypatch.setenv("VAULT_OPERATOR_TOKEN", issued.token)
    yield issued.token
    vault_server.revoke_accessor(services.vault_addr, services.admin_token, issued.accessor)


@pytest.fixture
def secret(root_vault: vault.ProcessVault) -> Iterator[tuple[str, dict[str, str]]]:
    path, value = f"{SECRET_PREFIX}/{uuid.uuid4()}", {"value": secrets.token_hex(16)}
    root_vault.kv_write(path, value)
    yield path, value
    root_vault.kv_destroy(path)


@pytest.fixture
def fresh_var() -> Iterator[Path]:
    # Under var/ like the harness's own servers (not /tmp): PostgreSQL's system user must reach it.
    path = ROOT / "var" / f"test-restore-{os.getpid()}-{secrets.token_hex(3)}"
    yield path
    # Servers a killed restore left running (found by their pid files) are stopped before removal.
    EmbeddedServices(root=path)._stop_leftovers()
    shutil.rmtree(path, ignore_errors=True)


def write_log(n: int, action: str = "test.backup") -> None:
    for i in range(n):
        record(actor="system:test", action=action, target=("thing", i), data={"i": i})


def take_backup(parent: Path) -> tuple[Path, str]:
    out = io.StringIO()
    call_command("backup", "--dir", str(parent), stdout=out)
    (made,) = list(parent.iterdir())
    return made, out.getvalue()


def restored_env(services: Harness, servers: dict[str, str], var_dir: Path, token: str) -> dict[str, str]:
    """A botconsole process on the fresh servers, with this session's control token (restored with the snapshot)."""
    return process_env(
        services,
        token=token,
        var_dir=var_dir,
        DATABASE_URL=servers["DATABASE_URL"],
        REDIS_URL=servers["REDIS_URL"],
        VAULT_ADDR=servers["VAULT_ADDR"],
    )


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- the backup ----------------------------------------------------------------------------------


def test_a_backup_holds_the_database_the_snapshot_and_the_checkpoints_each_with_its_checksum(
    tmp_path: Path,
    checkpoints: Path,
    backup_token: str,
    control_vault: vault.ProcessVault,
    secret: tuple[str, dict[str, str]],
    services: Harness,
) -> None:
    write_log(3)
    audit_checkpoint_create(source="system:test", process_vault=control_vault)
    made, output = take_backup(tmp_path / "backups")

    manifest = json.loads((made / MANIFEST).read_text())
    assert set(manifest["files"]) == {DATABASE_FILE, VAULT_FILE, CHECKPOINTS_FILE}
    for name, info in manifest["files"].items():
        assert file_sha256(made / name) == info["sha256"], name
        assert info["bytes"] == (made / name).stat().st_size > 0
    assert (made / CHECKPOINTS_FILE).read_bytes() == checkpoints.read_bytes()
    assert manifest["database"]["server_version"] and manifest["openbao"]["version"]
    # Owner only, everywhere.
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    for path in made.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert "UNSEAL KEY IS NOT IN THIS BACKUP" in output
    assert backup_token not in output and services.admin_token not in output
    assert not any(backup_token.encode() in path.read_bytes() for path in made.iterdir())
    entry = AuditEntry.objects.order_by("-seq").first()
    assert entry is not None and entry.action == "backup.create" and entry.data["directory"] == made.name


def test_the_backup_token_can_take_a_snapshot_but_not_read_a_secret(
    services: Harness, backup_token: str, secret: tuple[str, dict[str, str]]
) -> None:
    with pytest.raises(vault.VaultForbidden):
        vault.ProcessVault(services.vault_addr, backup_token).kv_read(secret[0])


def test_a_failed_backup_leaves_no_directory_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_OPERATOR_TOKEN", "not-a-token")
    with pytest.raises(CommandError, match="botconsole-backup policy"):
        call_command("backup", "--dir", str(tmp_path / "backups"), stdout=io.StringIO())
    assert list((tmp_path / "backups").iterdir()) == []


# -- the restore ---------------------------------------------------------------------------------


def test_a_backup_restores_into_fresh_servers_where_the_audit_log_verifies_and_tampering_shows(
    tmp_path: Path,
    checkpoints: Path,
    backup_token: str,
    control_vault: vault.ProcessVault,
    secret: tuple[str, dict[str, str]],
    services: Harness,
    fresh_var: Path,
) -> None:
    write_log(5)
    audit_checkpoint_create(source="system:test", process_vault=control_vault)
    write_log(2, "test.after-checkpoint")  # entries the last checkpoint does not cover yet
    backed_up_to = AuditEntry.objects.order_by("-seq").values_list("seq", flat=True).first()
    assert backed_up_to is not None
    made, _ = take_backup(tmp_path / "backups")  # its own audit entry comes after the dump
    keys = tmp_path / "keys" / "init.json"  # kept apart from the backup, as the README says
    write_private(keys, json.dumps({"unseal_key": services.unseal_key, "root_token": services.admin_token}))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "VAULT_", "DJANGO_"))}
    env.update(BOTCONSOLE_VAR_DIR=str(fresh_var), SECRET_KEY=settings.SECRET_KEY)
    restore = subprocess.run(
        [sys.executable, "-m", "launcher.restore_local", str(made), "--keys", str(keys)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "database restored" in restore.stdout
    assert "OpenBao restored and unsealed" in restore.stdout
    assert f"verified up to #{backed_up_to} " in restore.stdout
    assert "1 signed checkpoints verified" in restore.stdout
    assert services.unseal_key not in restore.stdout + restore.stderr
    assert services.admin_token not in restore.stdout + restore.stderr
    assert json.loads((fresh_var / "openbao" / "init.json").read_text())["unseal_key"] == services.unseal_key

    # The next start of these servers opens the restored OpenBao with the original keys.
    fresh = EmbeddedServices(root=fresh_var)
    try:
        servers = fresh.start()
        assert servers["DATABASE_URL"] != os.environ["DATABASE_URL"]
        assert servers["VAULT_ADDR"] != services.vault_addr
        restored = vault.ProcessVault(servers["VAULT_ADDR"], services.admin_token)
        assert restored.kv_read(secret[0]) == secret[1]

        # audit_verify, as an operator runs it: the control worker's token (restored with the
        # snapshot) and the checkpoint file the restore put back under the fresh var/.
        env = restored_env(services, servers, fresh_var, services.tokens["control"].token)
        verified = manage(env, "audit_verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "audit chain OK" in verified.stdout and "1 signed checkpoints verified" in verified.stdout

        # A database superuser's edit of the restored log, triggers off: caught.
        tampered_seq = backed_up_to - 1
        with psycopg.connect(servers["DATABASE_URL"], autocommit=True) as conn:
            conn.execute("ALTER TABLE audit_auditentry DISABLE TRIGGER USER")
            conn.execute("UPDATE audit_auditentry SET data = '{\"i\": 999}' WHERE seq = %s", [tampered_seq])
            conn.execute("ALTER TABLE audit_auditentry ENABLE TRIGGER USER")
        broken = manage(env, "audit_verify")
        assert broken.returncode != 0
        assert f"audit log BROKEN at #{tampered_seq}" in broken.stderr
    finally:
        fresh.stop()


def test_it_refuses_a_database_that_holds_data(
    tmp_path: Path,
    checkpoints: Path,
    backup_token: str,
    secret: tuple[str, dict[str, str]],
    root_vault: vault.ProcessVault,
) -> None:
    write_log(2)
    made, _ = take_backup(tmp_path / "backups")
    before = AuditEntry.objects.count()
    root_vault.kv_write(secret[0], {"value": "changed after the backup"})
    with pytest.raises(CommandError, match=r"already holds data .*--force"):
        call_command("restore", str(made), "--yes", stdout=io.StringIO())
    assert AuditEntry.objects.count() == before
    assert root_vault.kv_read(secret[0]) == {"value": "changed after the backup"}


def test_it_asks_for_confirmation_and_changes_nothing_without_it(
    tmp_path: Path,
    checkpoints: Path,
    backup_token: str,
    secret: tuple[str, dict[str, str]],
    root_vault: vault.ProcessVault,
) -> None:
    write_log(2)
    made, _ = take_backup(tmp_path / "backups")
    before = AuditEntry.objects.count()
    root_vault.kv_write(secret[0], {"value": "changed after the backup"})
    with pytest.raises(CommandError, match="pass --yes"):
        call_command("restore", str(made), "--force", stdout=io.StringIO())  # stdin is no terminal here
    assert AuditEntry.objects.count() == before
    assert root_vault.kv_read(secret[0]) == {"value": "changed after the backup"}


@pytest.mark.parametrize("damaged", [DATABASE_FILE, VAULT_FILE, CHECKPOINTS_FILE])
def test_it_refuses_a_backup_whose_file_was_altered(
    damaged: str, tmp_path: Path, checkpoints: Path, backup_token: str, control_vault: vault.ProcessVault
) -> None:
    write_log(2)
    audit_checkpoint_create(source="system:test", process_vault=control_vault)
    made, _ = take_backup(tmp_path / "backups")
    data = bytearray((made / damaged).read_bytes())
    data[len(data) // 2] ^= 0x01
    (made / damaged).write_bytes(bytes(data))
    before = AuditEntry.objects.count()
    with pytest.raises(CommandError, match=f"{damaged} does not match its SHA-256"):
        call_command("restore", str(made), "--yes", "--force", stdout=io.StringIO())
    assert AuditEntry.objects.count() == before


def test_it_refuses_a_directory_that_is_no_backup(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="not a botconsole backup"):
        call_command("restore", str(tmp_path), "--yes", stdout=io.StringIO())
