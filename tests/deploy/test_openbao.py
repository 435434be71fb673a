"""deploy/openbao: the production config runs a real OpenBao over TLS, and bootstrap.sh gives each
process its own AppRole.

A fresh OpenBao (not the test session's) is started from openbao.hcl with only an installation's
substitutions (addresses, paths, certificate), so the shared test Vault is never changed. The tests
of this module run in order against that one server: uninitialised first, then initialised.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hvac
import pytest
import requests

from apps.core.files import bao_bin
from apps.vault import client as vault
from launcher.embedded import free_port
from tests.deploy.conftest import DEPLOY, ROOT, make_tls

CONFIG = DEPLOY / "openbao" / "openbao.hcl"
BOOTSTRAP = DEPLOY / "openbao" / "bootstrap.sh"
PROCESSES = ("web", "control", "fleet")


@dataclass
class Bao:
    addr: str
    ca: Path
    audit_log: Path

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token, verify=str(self.ca), timeout=60)


def render_config(tmp: Path, port: int, cluster_port: int) -> tuple[Path, Path, Path]:
    text = CONFIG.read_text()
    tls = make_tls(tmp / "tls", "127.0.0.1")
    data, audit_log = tmp / "data", tmp / "log" / "audit.log"
    data.mkdir(mode=0o700, parents=True)
    audit_log.parent.mkdir(mode=0o700)
    replacements = {
        "https://vault.example.internal:8200": f"https://127.0.0.1:{port}",
        "https://vault.example.internal:8201": f"https://127.0.0.1:{cluster_port}",
        '"0.0.0.0:8200"': f'"127.0.0.1:{port}"',
        '"0.0.0.0:8201"': f'"127.0.0.1:{cluster_port}"',
        "/var/lib/openbao/data": str(data),
        "/etc/openbao/tls/fullchain.pem": str(tls.cert),
        "/etc/openbao/tls/privkey.pem": str(tls.key),
        "/var/log/openbao/audit.log": str(audit_log),
    }
    for old, new in replacements.items():
        assert old in text, f"{old} is no longer in {CONFIG.name}: update this test's substitutions"
        text = text.replace(old, new)
    config = tmp / "openbao.hcl"
    config.write_text(text)
    return config, tls.ca, audit_log


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    """OpenBao from the production config: running, TLS, not yet initialised."""
    tmp = tmp_path_factory.mktemp("openbao")
    port, cluster_port = free_port(), free_port()
    config, ca, audit_log = render_config(tmp, port, cluster_port)
    server_log = tmp / "server.log"
    with open(server_log, "wb") as log:
        proc = subprocess.Popen(
            [str(bao_bin()), "server", f"-config={config}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Bao(addr=f"https://127.0.0.1:{port}", ca=ca, audit_log=audit_log)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, server_log.read_text()
            try:
                server.client().sys.is_initialized()
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, server_log.read_text()
                time.sleep(0.2)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@contextlib.contextmanager
def trusting(ca: Path) -> Iterator[None]:
    """botconsole's Vault client (requests) trusts `ca`, as REQUESTS_CA_BUNDLE makes it in production."""
    saved = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["REQUESTS_CA_BUNDLE"]
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = saved


def run_bootstrap(bao: Bao, etc: Path, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": f"{bao_bin().parent}:{os.environ['PATH']}",
        "HOME": str(etc.parent),
        "BAO_ADDR": bao.addr,
        "BAO_CACERT": str(bao.ca),
        "BAO_TOKEN": token,
        "BOTCONSOLE_PREFIX": str(ROOT),
        "BOTCONSOLE_ETC": str(etc),
        "BOTCONSOLE_PYTHON": sys.executable,
    }
    return subprocess.run(
        ["bash", str(BOOTSTRAP), *args], env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def credentials(etc: Path) -> dict[str, dict[str, str]]:
    return {p: parse_env((etc / f"vault-{p}.env").read_text()) for p in PROCESSES}


def test_the_production_config_serves_tls_only(bao: Bao) -> None:
    assert bao.client().sys.is_initialized() is False
    plain = requests.get(f"{bao.addr.replace('https://', 'http://')}/v1/sys/health", timeout=5)
    assert plain.status_code == 400 and b"HTTPS" in plain.content.upper()


def test_bootstrap_refuses_an_uninitialised_server_and_explains_initialisation(bao: Bao, tmp_path: Path) -> None:
    result = run_bootstrap(bao, tmp_path / "etc", token="unused")
    assert result.returncode == 1
    assert "bao operator init -key-shares=5 -key-threshold=3" in result.stderr
    assert not (tmp_path / "etc").exists()


def test_bootstrap_gives_each_process_its_own_approle(bao: Bao, tmp_path: Path) -> None:
    # What an operator does by hand first (here with a single key share).
    init = bao.client().sys.initialize(secret_shares=1, secret_threshold=1)
    root_token = init["root_token"]
    assert bao.client().sys.submit_unseal_key(key=init["keys_base64"][0])["sealed"] is False
    deadline = time.monotonic() + 30
    while bao.client().sys.read_health_status(method="GET", standby_ok=True).get("standby", True):
        assert time.monotonic() < deadline, "OpenBao did not become active"
        time.sleep(0.2)

    etc = tmp_path / "etc"
    result = run_bootstrap(bao, etc, token=root_token)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert root_token not in output
    assert stat.S_IMODE(etc.stat().st_mode) == 0o700
    first = credentials(etc)

    logins: dict[str, vault.LoginToken] = {}
    with trusting(bao.ca):
        for process, creds in first.items():
            assert stat.S_IMODE((etc / f"vault-{process}.env").stat().st_mode) == 0o600
            assert set(creds) == {"VAULT_ROLE_ID", "VAULT_SECRET_ID"}
            assert creds["VAULT_SECRET_ID"] not in output
            logins[process] = vault.approle_login(bao.addr, creds["VAULT_ROLE_ID"], creds["VAULT_SECRET_ID"])
            assert sorted(logins[process].policies) == sorted(["default", f"botconsole-{process}"])

    # The shipped policies hold on this server too: the web identity cannot read an exchange secret.
    bao.client(root_token).secrets.kv.v2.create_or_update_secret(
        path="exchange-accounts/probe", secret={"api_secret": "probe"}, mount_point="kv"
    )
    with pytest.raises(hvac.exceptions.Forbidden):
        bao.client(logins["web"].token).secrets.kv.v2.read_secret_version(
            path="exchange-accounts/probe", mount_point="kv", raise_on_deleted_version=True
        )
    # The fleet supervisor keeps one token and renews it hourly: periodic, no maximum lifetime.
    assert bao.client(logins["fleet"].token).auth.token.lookup_self()["data"]["period"] == 24 * 3600
    assert not bao.client(logins["web"].token).auth.token.lookup_self()["data"].get("period")

    # The audit device declared in the config records the logins, SecretIDs only as HMACs.
    audit = bao.audit_log.read_text()
    assert "auth/approle/login" in audit
    assert not any(creds["VAULT_SECRET_ID"] in audit for creds in first.values())

    # Run again: nothing changes.
    again = run_bootstrap(bao, etc, token=root_token)
    assert again.returncode == 0, again.stderr
    assert "already set up; nothing changed" in again.stdout
    assert credentials(etc) == first

    # --rotate: the new SecretIDs log in, the old ones are destroyed.
    rotated = run_bootstrap(bao, etc, "--rotate", token=root_token)
    assert rotated.returncode == 0, rotated.stderr
    second = credentials(etc)
    with trusting(bao.ca):
        for process in PROCESSES:
            old, new = first[process], second[process]
            assert new["VAULT_ROLE_ID"] == old["VAULT_ROLE_ID"]
            assert new["VAULT_SECRET_ID"] != old["VAULT_SECRET_ID"]
            assert vault.approle_login(bao.addr, new["VAULT_ROLE_ID"], new["VAULT_SECRET_ID"]).policies
            with pytest.raises(vault.VaultError):
                vault.approle_login(bao.addr, old["VAULT_ROLE_ID"], old["VAULT_SECRET_ID"])


def test_the_bootstrap_script_never_puts_a_token_or_secret_on_a_command_line() -> None:
    """ps shows argv to every user: the token travels in the environment, SecretIDs on stdin or stdout."""
    for line in BOOTSTRAP.read_text().splitlines():
        code = line.split("#", 1)[0]
        if '"$bao"' in code:
            arguments = code.split('"$bao"', 1)[1]
            assert not re.search(r"\$\{?(BAO_TOKEN|secret_id|old_secret)\b", arguments), line
