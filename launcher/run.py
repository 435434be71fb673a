"""`make run`: one supervisor for the whole local console.

It starts the embedded servers (those the environment does not name), bootstraps Vault,
migrates, creates the first admin on a fresh database, then runs the ASGI server, the
control worker and beat, each in its own process group and each with only its own Vault
token. Ctrl-C (or SIGTERM) stops every process it started, then the servers, in order.

Run as `python -m launcher.run`; this module does not import Django itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import environ

from apps.core.files import read_json, write_private
from apps.vault import client as vault
from apps.vault import server as vault_server
from launcher.embedded import (
    EmbeddedServices,
    ServiceStartError,
    free_port,
    kill_group,
    missing_services,
    stop_process_group,
)

BASE_DIR = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
WEB_READY_TIMEOUT_S = 30.0
# What var/run/services.env names for commands run from another terminal (botconsole.settings.local reads it).
SERVICES_ENV_KEYS = ("DATABASE_URL", "REDIS_URL", "VAULT_ADDR", "SANDBOX_URL")


def web_argv(port: int) -> list[str]:
    """How `make run` starts the web server (the tests start it the same way).

    `--no-proxy-headers`: nothing stands in front of it, so no X-Forwarded-For is believed, from
    anyone. uvicorn's default trusts that header from 127.0.0.1, which is where every local client
    connects from: anyone could pick the address that django-axes locks out and the audit records.
    """
    return [
        PYTHON,
        "-m",
        "uvicorn",
        "botconsole.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--lifespan",
        "off",
        "--no-server-header",
        "--no-proxy-headers",
    ]


class Stop(Exception):
    """Raised by the signal handler to unwind into the shutdown path."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[Any]


def _die_with_parent() -> None:
    # Linux: if the supervisor is killed outright, its children get SIGTERM instead of
    # living on as orphans holding ports.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def say(message: str) -> None:
    print(f"botconsole: {message}", flush=True)


class Supervisor:
    def __init__(self, var_dir: Path, port: int) -> None:
        self.var_dir = var_dir
        self.run_dir = var_dir / "run"
        self.port = port
        self.services = EmbeddedServices(root=var_dir, want=missing_services(os.environ))
        self.children: list[Child] = []
        self.tokens: list[vault_server.IssuedToken] = []
        self.admin_token = ""
        self.env: dict[str, str] = {}

    # -- setup -----------------------------------------------------------------------------

    def prepare(self) -> str | None:
        """Start servers, bootstrap Vault, migrate; returns the first-run login line, if any."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover_children()
        if free_port(self.port) != self.port:
            raise SystemExit(f"botconsole: port {self.port} on 127.0.0.1 is in use; set BOTCONSOLE_PORT to another")
        if self.services.want:
            say(f"starting embedded {', '.join(self.services.want)} (data under {self.var_dir})")
        urls = self.services.start()
        # The root token stays in this process: children get their own tokens below.
        self.env = {k: v for k, v in os.environ.items() if k not in ("VAULT_TOKEN", "VAULT_BOOTSTRAP_TOKEN")}
        self.env.update(urls)
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "botconsole.settings.local")
        self.env["BOTCONSOLE_VAR_DIR"] = str(self.var_dir)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.write_services_env()
        keys = self.services.vault_keys
        self.admin_token = keys.root_token if keys else os.environ.get("VAULT_BOOTSTRAP_TOKEN", "")
        if not self.admin_token:
            raise SystemExit("botconsole: VAULT_ADDR names your own Vault: set VAULT_BOOTSTRAP_TOKEN to an admin token")
        for line in vault_server.bootstrap(self.env["VAULT_ADDR"], self.admin_token):
            say(f"vault: {line}")
        self._manage("migrate", "--noinput", quiet=True)
        out = self._manage("create_first_admin", quiet=True)
        return next((line for line in out.splitlines() if line.startswith("FIRST-RUN LOGIN")), None)

    def write_services_env(self) -> None:
        """Lets `manage.py` in another terminal (the shell's `killswitch`) find the servers while this runs.

        Written again once the sandbox exchange is up, so its URL is there too: without it the shell's
        kill could not reach the sandbox accounts of `make run`.
        """
        write_private(
            self.run_dir / "services.env",
            "".join(f"{k}={self.env[k]}\n" for k in SERVICES_ENV_KEYS if self.env.get(k)),
        )

    def _manage(self, *args: str, quiet: bool = False, extra_env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            [PYTHON, str(BASE_DIR / "manage.py"), *args],
            env={**self.env, **(extra_env or {})},
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            sys.stderr.write(result.stdout + result.stderr)
            raise SystemExit(f"botconsole: `manage.py {' '.join(args)}` failed")
        if not quiet:
            sys.stdout.write(result.stdout)
        return result.stdout

    def _token_env(self, process: str) -> dict[str, str]:
        issued = vault_server.create_process_token(self.env["VAULT_ADDR"], self.admin_token, process)
        self.tokens.append(issued)
        return {"VAULT_TOKEN": issued.token}

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str]) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            argv,
            env={**self.env, **extra_env},
            cwd=BASE_DIR,
            stdin=subprocess.DEVNULL,
            # preexec_fn is unsafe with threads; the supervisor has none.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.children.append(Child(name, proc))
        write_private(self.run_dir / "children.json", json.dumps({c.name: c.proc.pid for c in self.children}))
        return proc

    def start_sandbox(self) -> None:
        """The local test exchange, with a demo key kept in var/sandbox (0600) across restarts."""
        ports_file = self.var_dir / "ports.json"
        ports = read_json(ports_file)
        port = free_port(ports.get("sandbox"))
        write_private(ports_file, json.dumps({**ports, "sandbox": port}, indent=2))
        key_file = self.var_dir / "sandbox" / "demo-key.json"
        demo = read_json(key_file)
        if not demo:
            demo = {"api_key": secrets.token_hex(32), "api_secret": secrets.token_hex(32)}  # Binance-shaped
            write_private(key_file, json.dumps(demo))
        url = f"http://127.0.0.1:{port}"
        self.env["SANDBOX_URL"] = url
        self.write_services_env()
        # The key reaches the sandbox and the first-run command through the environment, not argv (ps shows argv).
        key_env = {"SANDBOX_API_KEY": demo["api_key"], "SANDBOX_API_SECRET": demo["api_secret"]}
        argv = [PYTHON, str(BASE_DIR / "manage.py"), "runsandbox", "--host", "127.0.0.1", "--port", str(port)]
        self._spawn("sandbox", argv, key_env)
        self.wait_http("sandbox", f"{url}/api/v3/ping")
        self._manage("create_demo_account", quiet=True, extra_env={**key_env, **self._token_env("web")})
        self._manage("create_demo_bots", quiet=True)

    def start_children(self) -> None:
        celery = [PYTHON, "-m", "celery", "-A", "botconsole"]
        specs: list[tuple[str, list[str], dict[str, str]]] = [
            ("web", web_argv(self.port), self._token_env("web")),
            (
                "control",
                [*celery, "worker", "-Q", "control", "-n", "control@%h", "--concurrency", "2", "--loglevel", "INFO"],
                self._token_env("control"),
            ),
            # Beat only schedules; it needs no Vault access at all.
            ("beat", [*celery, "beat", "-s", str(self.run_dir / "celerybeat-schedule"), "--loglevel", "INFO"], {}),
            # Last, so it stops first: it stops every bot worker (each in its own process group) on SIGTERM.
            ("fleet", [PYTHON, str(BASE_DIR / "manage.py"), "runfleet"], self._token_env("fleet")),
        ]
        for name, argv, extra in specs:
            self._spawn(name, argv, extra)

    def _stop_leftover_children(self) -> None:
        """Stop process groups a previous supervisor left when it was killed outright."""
        path = self.run_dir / "children.json"
        try:
            pids = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        import psutil

        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                # Our children run with the project as their working directory.
                if psutil.Process(pid).cwd() == str(BASE_DIR):
                    say(f"stopping {name}, left running from an earlier start (pid {pid})")
                    kill_group(pid, signal.SIGTERM)
        path.unlink(missing_ok=True)

    def wait_http(self, name: str, url: str) -> None:
        """Wait until a child answers 200 at url (none of them may exit meanwhile)."""
        deadline = time.monotonic() + WEB_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_children()
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=2) as response,  # noqa: S310 - loopback URLs we built  # nosec B310
            ):
                if response.status == 200:
                    return
            time.sleep(0.3)
        raise SystemExit(f"botconsole: {name} did not answer {url} within {WEB_READY_TIMEOUT_S:.0f} s")

    def _check_children(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None:
                raise SystemExit(f"botconsole: {child.name} exited with code {child.proc.returncode}; stopping")

    def supervise(self) -> None:
        while True:
            self._check_children()
            time.sleep(0.5)

    # -- shutdown --------------------------------------------------------------------------

    def shutdown(self) -> None:
        for child in reversed(self.children):
            stop_process_group(child.proc, signal.SIGTERM, timeout=15)
        self.children.clear()
        (self.run_dir / "children.json").unlink(missing_ok=True)
        for issued in self.tokens:
            with contextlib.suppress(vault.VaultError):
                vault_server.revoke_accessor(self.env["VAULT_ADDR"], self.admin_token, issued.accessor)
        self.tokens.clear()
        self.services.stop()
        (self.run_dir / "services.env").unlink(missing_ok=True)


def banner(url: str, login: str | None) -> str:
    lines = ["", "=" * 64, f"  botconsole is running at {url}"]
    if login:
        fields = dict(part.split("=", 1) for part in login.split()[2:])
        lines += [
            "  First run: log in with",
            f"    username: {fields['username']}",
            f"    password: {fields['password']}",
            "  This password is shown only once. Store it in your password manager.",
        ]
    else:
        lines.append("  Log in with your account (the first admin's password was shown on the first run).")
    lines += ["  Press Ctrl-C to stop everything.", "=" * 64, ""]
    return "\n".join(lines)


def main() -> int:
    var_dir = Path(os.environ.get("BOTCONSOLE_VAR_DIR", BASE_DIR / "var")).resolve()
    port = int(os.environ.get("BOTCONSOLE_PORT", "8000"))
    supervisor = Supervisor(var_dir, port)

    def on_signal(signum: int, frame: Any) -> None:
        raise Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        login = supervisor.prepare()
        supervisor.start_sandbox()
        supervisor.start_children()
        supervisor.wait_http("the web server", f"http://127.0.0.1:{port}/healthz")
        print(banner(f"http://127.0.0.1:{port}/", login), flush=True)
        if environ.Env().bool("BOTCONSOLE_DEBUG", default=False):
            say("BOTCONSOLE_DEBUG is on: error pages show source code and settings. Never on a shared machine.")
        supervisor.supervise()
    except Stop:
        say("stopping")
    except ServiceStartError as exc:
        print(f"botconsole: {exc}", file=sys.stderr)
        code = 1
    except SystemExit as exc:
        if exc.code not in (None, 0):
            print(exc.code, file=sys.stderr)
            code = 1
    finally:
        # A second Ctrl-C must not interrupt the shutdown and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.shutdown()
        say("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
