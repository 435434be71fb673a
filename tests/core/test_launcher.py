"""The embedded-server launcher and the `make run` supervisor, run for real."""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from apps.vault import client as vault
from launcher.embedded import PG_SYSTEM_USER, EmbeddedServices, ServiceStartError, free_port
from launcher.run import SERVICES_ENV_KEYS, Supervisor
from launcher.servers.postgres import pg_system_user

ROOT = Path(__file__).resolve().parents[2]
# A fresh terminal names none of these: the command must find them (var/run/services.env) by itself.
NOT_FROM_THE_SHELL = (*SERVICES_ENV_KEYS, "VAULT_TOKEN", "DJANGO_SETTINGS_MODULE")


def test_a_server_that_fails_to_start_is_named_with_its_log_tail(tmp_path: Path) -> None:
    # A data directory with no postgresql.conf: the real server refuses to start on it.
    data = tmp_path / "postgres" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("18\n")
    (tmp_path / "postgres" / "passwords.json").write_text(json.dumps({"superuser": "a", "app": "b"}))
    if os.geteuid() == 0:  # the server runs as its own user, who must own its data directory
        pg_system_user()
        pg = pwd.getpwnam(PG_SYSTEM_USER)
        os.chmod(data, 0o700)
        for path in (data, data / "PG_VERSION"):
            os.chown(path, pg.pw_uid, pg.pw_gid)
    services = EmbeddedServices(root=tmp_path, want=("postgres",))
    with pytest.raises(ServiceStartError) as caught:
        services.start()
    message = str(caught.value)
    assert message.startswith("PostgreSQL did not start")
    log_part = message.split("--- last lines of", 1)[1]
    assert "postgresql.conf" in log_part
    assert services.services == []  # nothing left running


def _system_user_uid(name: str) -> int | None:
    import launcher.servers.postgres as postgres

    postgres.PG_SYSTEM_USER = name  # this forked process only
    user = postgres.pg_system_user()
    return None if user is None else pwd.getpwnam(user).pw_uid


def test_processes_creating_the_postgres_user_at_once_all_get_the_one_that_exists() -> None:
    """make test's two processes start their servers together on a new machine: racing useradds once left one of
    them with a uid that no longer existed ("initdb: could not look up effective user ID 999")."""
    import multiprocessing

    name = f"bc-race-{os.getpid()}"
    try:
        with multiprocessing.get_context("fork").Pool(4) as pool:
            uids = pool.map(_system_user_uid, [name] * 4)
        if os.geteuid() != 0:
            assert uids == [None] * 4  # not root: PostgreSQL runs as ourselves, nobody is created
        else:
            assert len(set(uids)) == 1
            assert uids[0] == pwd.getpwnam(name).pw_uid
    finally:
        if os.geteuid() == 0:
            subprocess.run(["/usr/sbin/userdel", name], capture_output=True, check=False)


def test_services_env_names_the_sandbox_and_the_local_settings_read_it(tmp_path: Path) -> None:
    """What lets the shell's kill switch, run from another terminal, reach the servers and the sandbox of `make run`."""
    supervisor = Supervisor(tmp_path, free_port())
    supervisor.run_dir.mkdir(parents=True)
    supervisor.env = {
        "DATABASE_URL": "postgres://127.0.0.1:5999/botconsole",
        "REDIS_URL": "redis://127.0.0.1:6999/0",
        "VAULT_ADDR": "http://127.0.0.1:8999",
        "VAULT_TOKEN": "never-written",
    }
    supervisor.write_services_env()  # before the sandbox is up: no SANDBOX_URL yet
    path = tmp_path / "run" / "services.env"
    assert "SANDBOX_URL" not in path.read_text() and "VAULT_TOKEN" not in path.read_text()
    supervisor.env["SANDBOX_URL"] = "http://127.0.0.1:7999"
    supervisor.write_services_env()  # what start_sandbox does once it knows the sandbox's port
    assert path.read_text().splitlines() == [
        "DATABASE_URL=postgres://127.0.0.1:5999/botconsole",
        "REDIS_URL=redis://127.0.0.1:6999/0",
        "VAULT_ADDR=http://127.0.0.1:8999",
        "SANDBOX_URL=http://127.0.0.1:7999",
    ]
    assert path.stat().st_mode & 0o777 == 0o600
    env = {k: v for k, v in os.environ.items() if k not in NOT_FROM_THE_SHELL}
    env.update({"BOTCONSOLE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "botconsole.settings.local"})
    code = "import django; django.setup(); from django.conf import settings; print(settings.SANDBOX_URL)"
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "http://127.0.0.1:7999"


def _read_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        if re.search(pattern, seen):
            return seen
    raise AssertionError(f"did not see {pattern!r} within {timeout} s; output:\n{seen}")


def _start_console(var_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "VAULT_ADDR", "VAULT_TOKEN")}
    env.update({"BOTCONSOLE_VAR_DIR": str(var_dir), "BOTCONSOLE_PORT": str(port), "DJANGO_SETTINGS_MODULE": ""})
    env.pop("DJANGO_SETTINGS_MODULE")
    return subprocess.Popen(
        [sys.executable, "-m", "launcher.run"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop_console(proc: subprocess.Popen[str]) -> list[int]:
    """Ctrl-C the supervisor; return every pid of its tree that is still alive afterwards."""
    tree = [proc.pid] + [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    time.sleep(0.5)
    return [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


def test_make_run_starts_everything_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    var_dir, port = tmp_path / "var", free_port()
    url = f"http://127.0.0.1:{port}"

    proc = _start_console(var_dir, port)
    try:
        output = _read_until(proc, r"Press Ctrl-C", timeout=150)
        password = re.search(r"password: (\S+)", output)
        assert password, output
        assert f"botconsole is running at {url}/" in output

        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"
        with urllib.request.urlopen(f"{url}/accounts/login/", timeout=10) as response:
            assert response.status == 200 and b"Log in" in response.read()

        # The web process holds a web-policy token, and never the root token.
        keys = json.loads((var_dir / "openbao" / "init.json").read_text())
        assert (var_dir / "openbao" / "init.json").stat().st_mode & 0o777 == 0o600
        web_pid = json.loads((var_dir / "run" / "children.json").read_text())["web"]
        web_env = dict(
            item.split("=", 1) for item in Path(f"/proc/{web_pid}/environ").read_text().split("\0") if "=" in item
        )
        assert keys["root_token"] not in "\0".join(f"{k}={v}" for k, v in web_env.items())
        web_vault = vault.ProcessVault(web_env["VAULT_ADDR"], web_env["VAULT_TOKEN"])
        assert sorted(web_vault.token_policies()) == ["botconsole-web", "default"]

        # The shell's break-glass kill finds the servers and the sandbox by itself, reaches the demo
        # account there, and says so: every order verified, exit 0.
        sandbox_port = json.loads((var_dir / "ports.json").read_text())["sandbox"]
        assert f"SANDBOX_URL=http://127.0.0.1:{sandbox_port}" in (var_dir / "run" / "services.env").read_text()
        shell_env = {k: v for k, v in os.environ.items() if k not in NOT_FROM_THE_SHELL}
        shell_env["BOTCONSOLE_VAR_DIR"] = str(var_dir)
        kill = subprocess.run(
            [sys.executable, "-m", "launcher.as_process", "control", "killswitch", "--reason", "drill"],
            cwd=ROOT,
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert kill.returncode == 0, kill.stdout + kill.stderr
        assert "Orders still open: 0" in kill.stdout and "balances of 1 account(s) read" in kill.stdout
    finally:
        left = _stop_console(proc)
    assert left == []
    # Its tokens were revoked on the way out.
    with pytest.raises(vault.VaultError):
        web_vault.token_policies()

    # A second start reuses var/: same admin, no new password, data kept.
    proc = _start_console(var_dir, port)
    try:
        output = _read_until(proc, r"Press Ctrl-C", timeout=60)
        assert "password:" not in output
        assert "first admin's password was shown on the first run" in output
    finally:
        left = _stop_console(proc)
    assert left == []
