"""Real PostgreSQL, Valkey and OpenBao servers started from their pip packages.

`make run` and the test session use these when DATABASE_URL / REDIS_URL / VAULT_ADDR
are unset. Each server listens on loopback only, on a free port remembered in
`<root>/ports.json`, and keeps its data under `<root>` so a restart keeps users, bots
and keys. OpenBao runs with raft storage (never `-dev`): the first start initializes
it and keeps the unseal key and root token in `<root>/openbao/init.json` (mode 0600).

Each server's own steps are in launcher/servers/ (postgres, valkey, openbao; what they share in
common); this module starts, tracks and stops them together, and re-exports the names the
rest of the launcher and the tests import from here.

This module must not import Django: it runs before settings can be loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.core.files import MissingPackage, bao_bin, pg_bin, read_json, valkey_bin, write_private
from launcher.servers.common import (
    LOG_TAIL_LINES,
    READY_TIMEOUT_S,
    Service,
    ServiceStartError,
    free_port,
    kill_group,
    log_tail,
    stop_process_group,
    stop_stale,
)
from launcher.servers.openbao import VaultKeys, start_openbao
from launcher.servers.postgres import APP_DB_NAME, APP_DB_ROLE, PG_SYSTEM_USER, start_postgres
from launcher.servers.valkey import start_valkey

__all__ = [
    "APP_DB_NAME",
    "APP_DB_ROLE",
    "LOG_TAIL_LINES",
    "PG_SYSTEM_USER",
    "READY_TIMEOUT_S",
    "EmbeddedServices",
    "Service",
    "ServiceStartError",
    "VaultKeys",
    "free_port",
    "kill_group",
    "log_tail",
    "missing_services",
    "running",
    "stop_process_group",
]


@dataclass
class EmbeddedServices:
    """Start, track and stop the embedded servers rooted at one `var/` directory."""

    root: Path
    want: tuple[str, ...] = ("postgres", "valkey", "openbao")
    services: list[Service] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    vault_keys: VaultKeys | None = None

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    def _ports(self) -> dict[str, int]:
        stored = {k: int(v) for k, v in read_json(self.ports_file).items()}
        ports = {name: free_port(stored.get(name)) for name in ("postgres", "valkey", "openbao", "openbao_cluster")}
        write_private(self.ports_file, json.dumps(ports, indent=2))
        return ports

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> dict[str, str]:
        """Start every wanted server, wait until each is ready, and return the env naming them."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # noqa: S103 - traversable (not listable) by the PostgreSQL user  # nosec B103
        self._stop_leftovers()  # before choosing ports, so a leftover does not push us off ours
        ports = self._ports()
        try:
            # Launch all processes first, then wait: the servers boot in parallel.
            finishers = [self._launch(name, ports) for name in self.want]
            for finish in finishers:
                finish()
        except MissingPackage as exc:
            self.stop()
            raise ServiceStartError("a backing server", str(exc), None) from None
        except BaseException:
            self.stop()
            raise
        return dict(self.env)

    def _launch(self, name: str, ports: dict[str, int]) -> Callable[[], None]:
        """Launch one server on its port; the returned step waits until it is ready."""
        if name == "postgres":
            return self._start_postgres(ports["postgres"])
        if name == "valkey":
            return self._start_valkey(ports["valkey"])
        if name == "openbao":
            return self._start_openbao(ports["openbao"], ports["openbao_cluster"])
        raise ValueError(f"no embedded server named {name!r}")

    def stop_one(self, name: str) -> None:
        """Stop one running server, as `stop` would; the others keep running. Its data and port are kept, so
        `start_one` brings it back as it was (the fault tests stop a server under a running fleet)."""
        found = [service for service in self.services if service.name == name]
        if not found:
            raise LookupError(f"the embedded {name} is not running")
        for service in found:
            stop_process_group(service.proc, signal.SIGINT if name == "postgres" else signal.SIGTERM, timeout=30)
            self.services.remove(service)

    def start_one(self, name: str) -> None:
        """Start one server again on the port it had (ports.json) and wait until it is ready: OpenBao unsealed
        and active, PostgreSQL accepting the application's logins, Valkey answering PING."""
        ports = {key: int(value) for key, value in read_json(self.ports_file).items()}
        self._launch(name, ports)()

    def _stop_leftovers(self) -> None:
        pidfiles = {
            "postgres": (
                self.root / "postgres" / "data" / "postmaster.pid",
                signal.SIGINT,
                "PostgreSQL",
                pg_bin("postgres"),
            ),
            "valkey": (self.root / "valkey" / "valkey.pid", signal.SIGTERM, "Valkey", valkey_bin()),
            "openbao": (self.root / "openbao" / "openbao.pid", signal.SIGTERM, "OpenBao", bao_bin()),
        }
        for name in self.want:
            pidfile, sig, label, binary = pidfiles[name]
            with contextlib.suppress(ValueError, OSError, IndexError):
                stop_stale(int(pidfile.read_text().split()[0]), sig, label, binary)

    def stop(self) -> None:
        """Stop the servers in reverse order of start; PostgreSQL gets a fast (SIGINT) shutdown."""
        for service in reversed(self.services):
            sig = signal.SIGINT if service.name == "postgres" else signal.SIGTERM
            stop_process_group(service.proc, sig, timeout=30)
        self.services.clear()

    def _spawn(self, name: str, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[Any]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own process group: Ctrl-C in the terminal reaches only the supervisor, which
                # then stops the servers in order instead of all at once.
                start_new_session=True,
                **kwargs,
            )
        self.services.append(Service(name, proc, log))
        return proc

    # -- the servers: each launches now and returns the step that waits for it and records its URL --

    def _start_postgres(self, port: int) -> Callable[[], None]:
        wait = start_postgres(self.root / "postgres", port, self._spawn)

        def finish() -> None:
            self.env["DATABASE_URL"] = wait()

        return finish

    def _start_valkey(self, port: int) -> Callable[[], None]:
        wait = start_valkey(self.root / "valkey", port, self._spawn)

        def finish() -> None:
            self.env["REDIS_URL"] = wait()

        return finish

    def _start_openbao(self, port: int, cluster_port: int) -> Callable[[], None]:
        wait = start_openbao(self.root / "openbao", port, cluster_port, self._spawn)

        def finish() -> None:
            self.env["VAULT_ADDR"], self.vault_keys = wait()

        return finish


@contextlib.contextmanager
def running(root: Path, want: tuple[str, ...]) -> Iterator[EmbeddedServices]:
    services = EmbeddedServices(root=root, want=want)
    services.start()
    try:
        yield services
    finally:
        services.stop()


def missing_services(environ: dict[str, str] | os._Environ[str]) -> tuple[str, ...]:
    """The embedded servers to start: those whose URL the environment does not name."""
    wanted = {"DATABASE_URL": "postgres", "REDIS_URL": "valkey", "VAULT_ADDR": "openbao"}
    return tuple(service for var, service in wanted.items() if not environ.get(var))
