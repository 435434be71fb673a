"""deploy/compose.yaml: the whole stack, wired as the systemd installation is.

Docker's compose plugin is not on this machine, so `docker compose config` cannot check the file
here; when it is present the file is also checked with it. Either way the YAML is read and the
wiring asserted: which process gets which Vault identity, what is reachable from outside, which
files the servers use.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Any

import yaml

from tests.deploy.conftest import DEPLOY

COMPOSE = DEPLOY / "compose.yaml"
APP = ("migrate", "web", "control", "beat", "fleet")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def command(service: dict[str, Any]) -> list[str]:
    raw = service["command"]
    return shlex.split(raw) if isinstance(raw, str) else list(raw)


def test_the_stack_has_every_process_and_server() -> None:
    assert set(services()) == {"postgres", "valkey", "openbao", "migrate", "web", "control", "beat", "fleet", "nginx"}
    # Where Docker's compose plugin is installed, it must accept the file too.
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), "config", "--quiet", "--no-interpolate"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=DEPLOY,
        )
        assert result.returncode == 0, result.stderr


def test_each_process_gets_only_its_own_vault_identity() -> None:
    expected = {"web": "env/vault-web.env", "control": "env/vault-control.env", "fleet": "env/vault-fleet.env"}
    for name in APP:
        env_files = services()[name]["env_file"]
        assert env_files[0] == "env/botconsole.env"
        assert [f for f in env_files if "vault" in f] == ([expected[name]] if name in expected else [])
        assert services()[name]["user"] == f"botconsole-{name}"
    assert services()["migrate"]["env_file"][-1] == "env/migrate.env"


def test_only_nginx_is_reachable_from_outside() -> None:
    published = {name: s.get("ports", []) for name, s in services().items() if s.get("ports")}
    assert published == {"web": ["80:80", "443:443"]}
    # ... and those are nginx's: it lives in web's network namespace, where uvicorn listens on loopback.
    assert services()["nginx"]["network_mode"] == "service:web"
    web = command(services()["web"])
    assert web[web.index("--host") + 1] == "127.0.0.1"
    assert web[web.index("--forwarded-allow-ips") + 1] == "127.0.0.1"
    assert compose()["networks"]["data"]["internal"] is True
    for server in ("postgres", "valkey", "openbao"):
        assert services()[server]["networks"] == ["data"]


def test_the_servers_use_the_shipped_files() -> None:
    mounts = {name: [v.split(":")[0] for v in s.get("volumes", [])] for name, s in services().items()}
    assert "./nginx/botconsole.conf" in mounts["nginx"]
    assert "./openbao/openbao.hcl" in mounts["openbao"]
    assert "./postgres/roles.sql" in mounts["postgres"]
    assert "./redis/users.acl" in mounts["valkey"]
    for source in (s for volumes in mounts.values() for s in volumes if s.startswith("./")):
        target = DEPLOY / source
        # tls/ and secrets/ are the operator's, created at install time.
        assert target.exists() or source.startswith(("./tls", "./secrets")), source


def test_app_containers_are_locked_down_and_wait_for_migrate() -> None:
    for name in APP:
        service = services()[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        if name != "migrate":
            assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    steps = command(services()["migrate"])[-1]
    assert steps.index("migrate --noinput") < steps.index("db_grant_runtime") < steps.index("collectstatic")


def test_no_secret_is_written_into_the_file() -> None:
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            assert not any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")) or key.endswith("_FILE"), (
                name,
                key,
            )
            assert "://" not in str(value) or "@" not in str(value), (name, key)
    for image in (s["image"] for s in services().values() if "image" in s and "build" not in s):
        assert ":" in image and not image.endswith(":latest"), image
