"""`python -m launcher.as_process`: a shell command gets its own process token from the local root token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from apps.audit.checkpoints import audit_checkpoint_create
from apps.audit.services import record
from apps.vault import client as vault
from tests.harness import Harness
from tests.processes import process_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def run(services: Harness, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A `make run` checkout: init.json (0600) in the var directory; no token in the environment.
    (tmp_path / "openbao").mkdir(exist_ok=True)
    keys = tmp_path / "openbao" / "init.json"
    keys.write_text(json.dumps({"root_token": services.admin_token}))
    keys.chmod(0o600)
    env = process_env(services, token="", var_dir=tmp_path, AUDIT_CHECKPOINT_FILE=str(tmp_path / "checkpoints.jsonl"))
    env.pop("VAULT_TOKEN")
    return subprocess.run(
        [sys.executable, "-m", "launcher.as_process", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_audit_verify_from_a_shell_checks_signatures_with_a_control_token(
    services: Harness, tmp_path: Path, control_vault: vault.ProcessVault, settings: Any
) -> None:
    settings.AUDIT_CHECKPOINT_FILE = tmp_path / "checkpoints.jsonl"  # this test's own copy outside the DB
    record(actor="system:test", action="test.entry", data={"n": 1})
    assert audit_checkpoint_create(source="system:test", process_vault=control_vault).checkpoint is not None
    done = run(services, tmp_path, "control", "audit_verify")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "audit chain OK" in done.stdout and "1 signed checkpoints verified" in done.stdout
    assert services.admin_token not in done.stdout + done.stderr

    # The web kind may not verify signatures: the same command fails with its token.
    refused = run(services, tmp_path, "web", "audit_verify")
    assert refused.returncode != 0 and "could not check the checkpoint signatures" in refused.stderr


def test_an_unknown_process_kind_is_refused(services: Harness, tmp_path: Path) -> None:
    done = run(services, tmp_path, "root", "audit_verify")
    assert done.returncode == 2 and "usage:" in done.stderr
