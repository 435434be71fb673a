"""deploy/systemd: the units parse, are sandboxed, keep each process's Vault identity to itself,
and pass `systemd-analyze verify` (with the install prefix /opt/botconsole pointed at this checkout)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import get_commands

from tests.deploy.conftest import DEPLOY, ROOT

UNITS = DEPLOY / "systemd"
PREFIX = "/opt/botconsole"
SYSTEMD_ANALYZE = "/usr/bin/systemd-analyze"
SERVICES = ("web", "control", "beat", "fleet", "migrate")
# Which AppRole environment file each process may read: its own, or none.
VAULT_FILES = {
    "web": "/etc/botconsole/vault-web.env",
    "control": "/etc/botconsole/vault-control.env",
    "fleet": "/etc/botconsole/vault-fleet.env",
    "beat": None,
    "migrate": None,
}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectProc": "invisible",
    "RestrictSUIDSGID": "yes",
    "CapabilityBoundingSet": "",
    "SystemCallFilter": "@system-service",
}


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}, repeated keys kept in order, continuations joined."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip() if pending else raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path.name}:{number}: a setting before any [section]"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not key=value: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}= appears {len(found)} times"
    return found[0]


def service(name: str) -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNITS / f"botconsole-{name}.service")


def exec_starts(name: str) -> list[list[str]]:
    return [shlex.split(line) for line in values(service(name), "Service", "ExecStart")]


def test_there_is_a_unit_for_every_process_and_the_target_wants_the_long_running_ones() -> None:
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(f"botconsole-{n}.service" for n in SERVICES)
    target = parse_unit(UNITS / "botconsole.target")
    wanted = " ".join(values(target, "Unit", "Wants")).split()
    assert sorted(wanted) == sorted(f"botconsole-{n}.service" for n in SERVICES if n != "migrate")
    assert values(target, "Install", "WantedBy") == ["multi-user.target"]


@pytest.mark.parametrize("name", SERVICES)
def test_each_unit_runs_as_its_own_unprivileged_user_in_a_sandbox(name: str) -> None:
    unit = service(name)
    assert one(unit, "Service", "User") == f"botconsole-{name}"
    assert one(unit, "Service", "Group") == "botconsole"
    for key, expected in HARDENING.items():
        assert one(unit, "Service", key) == expected, key
    assert one(unit, "Service", "WorkingDirectory") == PREFIX
    assert "DJANGO_SETTINGS_MODULE=botconsole.settings.production" in values(unit, "Service", "Environment")
    env_files = values(unit, "Service", "EnvironmentFile")
    assert env_files[0] == "/etc/botconsole/botconsole.env"
    vault_files = [f for f in env_files if "vault" in f]
    assert vault_files == ([VAULT_FILES[name]] if VAULT_FILES[name] else []), "a process may hold only its own AppRole"
    # Anything a unit may write is its own state directory.
    for path in values(unit, "Service", "ReadWritePaths"):
        assert path == f"/var/lib/botconsole/{one(unit, 'Service', 'StateDirectory').split('/', 1)[1]}"


def test_no_two_units_share_a_user() -> None:
    users = [one(service(name), "Service", "User") for name in SERVICES]
    assert len(set(users)) == len(users)


@pytest.mark.parametrize("name", SERVICES)
def test_every_command_a_unit_starts_exists_in_this_checkout(name: str) -> None:
    commands = get_commands()
    for argv in exec_starts(name):
        assert argv[0] == f"{PREFIX}/.venv/bin/python", argv
        rest = argv[1:]
        if rest[0] == "manage.py":
            assert (ROOT / "manage.py").exists()
            assert rest[1] in commands, f"manage.py {rest[1]} does not exist"
        else:
            assert rest[0] == "-m" and rest[1] in ("uvicorn", "celery"), argv


def test_the_web_unit_listens_on_loopback_and_trusts_forwarded_headers_only_from_there() -> None:
    (argv,) = exec_starts("web")
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--forwarded-allow-ips") + 1] == "127.0.0.1"
    assert "--proxy-headers" in argv
    # nginx's upstream is this address.
    port = argv[argv.index("--port") + 1]
    assert f"server 127.0.0.1:{port};" in (DEPLOY / "nginx" / "botconsole.conf").read_text()


def test_the_workers_listen_to_their_queues_and_beat_needs_no_vault() -> None:
    (control,) = exec_starts("control")
    assert control[control.index("-Q") + 1] == "control"
    # systemd turns %% into %, so celery receives its own %h.
    assert "control@%%h" in control
    (beat,) = exec_starts("beat")
    assert "beat" in beat
    (fleet,) = exec_starts("fleet")
    assert fleet[-1] == "runfleet"
    assert one(service("fleet"), "Service", "KillMode") == "mixed"


def test_the_migrate_unit_migrates_then_grants_then_collects_static_files() -> None:
    steps = [argv[2] for argv in exec_starts("migrate")]
    assert steps == ["migrate", "db_grant_runtime", "collectstatic"]
    unit = service("migrate")
    assert one(unit, "Service", "Type") == "oneshot"
    assert values(unit, "Service", "EnvironmentFile")[-1] == "/etc/botconsole/migrate.env"
    for name in ("web", "control", "beat", "fleet"):
        assert "botconsole-migrate.service" in values(service(name), "Unit", "Requires")


def _rendered(tmp_path: Path) -> list[Path]:
    """The units with the install prefix pointed at this checkout, where .venv/bin/python exists."""
    out = []
    for path in [*sorted(UNITS.glob("*.service")), UNITS / "botconsole.target"]:
        target = tmp_path / path.name
        target.write_text(path.read_text().replace(PREFIX, str(ROOT)))
        out.append(target)
    return out


def _verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    assert Path(SYSTEMD_ANALYZE).exists(), "systemd-analyze is missing: `make deploy-tools` installs it"
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=paths[0].parent,
    )


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    result = _verify(_rendered(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr + result.stdout


def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    paths = _rendered(tmp_path)
    web = next(p for p in paths if p.name == "botconsole-web.service")
    web.write_text(web.read_text().replace("ProtectSystem=strict", "ProtectSystem=strict\nProtectSystm=yes"))
    result = _verify(paths)
    assert "Unknown key 'ProtectSystm'" in result.stderr


def test_the_sysusers_file_creates_every_user_the_units_run_as(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    assert sysusers, "systemd-sysusers is missing: `make deploy-tools` installs systemd"
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow"):
        (tmp_path / "etc" / name).write_text("")
    result = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(UNITS / "botconsole.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    group_id = next(
        line.split(":")[2]
        for line in (tmp_path / "etc" / "group").read_text().splitlines()
        if line.startswith("botconsole:")
    )
    for name in SERVICES:
        fields = passwd[f"botconsole-{name}"]
        assert fields[3] == group_id and fields[6] == "/usr/sbin/nologin"


# -- deploy/bin/botconsole-manage -----------------------------------------------------------------


def run_manage_wrapper(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the wrapper with a recording `systemd-run` first on PATH.

    This container has no running systemd to start a transient unit, so a stand-in records the
    command line the wrapper would hand to systemd-run; what systemd does with it is systemd's.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv"
    stub = bin_dir / "systemd-run"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > "{record}"\n')
    stub.chmod(0o755)
    result = subprocess.run(
        ["bash", str(DEPLOY / "bin" / "botconsole-manage"), *args],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    argv = record.read_text().split("\0")[:-1] if record.exists() else []
    return result, argv


def test_the_manage_wrapper_runs_a_command_as_the_process_with_only_its_identity(tmp_path: Path) -> None:
    result, argv = run_manage_wrapper(
        tmp_path, "control", "killswitch", "--reason", "key leak", VAULT_OPERATOR_TOKEN="operator-token-value"
    )
    assert result.returncode == 0, result.stderr
    assert "--uid=botconsole-control" in argv and "--gid=botconsole" in argv
    assert argv[-5:] == [f"{PREFIX}/.venv/bin/python", f"{PREFIX}/manage.py", "killswitch", "--reason", "key leak"]
    env_files = [argv[i + 1] for i, a in enumerate(argv) if a == "-p" and argv[i + 1].startswith("EnvironmentFile=")]
    assert env_files == [
        "EnvironmentFile=/etc/botconsole/botconsole.env",
        "EnvironmentFile=/etc/botconsole/vault-control.env",
    ]
    assert "DJANGO_SETTINGS_MODULE=botconsole.settings.production" in argv
    # The operator token is handed over by name (systemd-run copies its value), never on the command line.
    assert "VAULT_OPERATOR_TOKEN" in argv and not any("operator-token-value" in a for a in argv)


def test_the_manage_wrapper_refuses_an_unknown_process(tmp_path: Path) -> None:
    result, argv = run_manage_wrapper(tmp_path, "root", "shell")
    assert result.returncode == 2 and "usage" in result.stderr and argv == []
