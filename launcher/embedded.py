"""Real PostgreSQL, Valkey and OpenBao servers started from their pip packages.

`make run` and the test session use these when DATABASE_URL / REDIS_URL / VAULT_ADDR
are unset. Each server listens on loopback only, on a free port remembered in
`<root>/ports.json`, and keeps its data under `<root>` so a restart keeps users, bots
and keys. OpenBao runs with raft storage (never `-dev`): the first start initializes
it and keeps the unseal key and root token in `<root>/openbao/init.json` (mode 0600).

This module must not import Django: it runs before settings can be loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.core.files import MissingPackage, bao_bin, pg_bin, read_json, valkey_bin, write_private
from apps.vault import client as vault
from apps.vault import server as vault_server

READY_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20
# PostgreSQL refuses to run as root; when we are root we drop to this system user.
PG_SYSTEM_USER = "botconsole-pg"
APP_DB_NAME = "botconsole"
APP_DB_ROLE = "botconsole"


class ServiceStartError(RuntimeError):
    """A backing server did not come up; the message names it and shows its log tail."""

    def __init__(self, name: str, reason: str, log_path: Path | None) -> None:
        tail = log_tail(log_path) if log_path else ""
        message = f"{name} did not start: {reason}"
        if tail:
            message += f"\n--- last lines of {log_path} ---\n{tail}"
        super().__init__(message)
        self.service = name


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port(preferred: int | None = None) -> int:
    """Return `preferred` if it can be bound on loopback, else a port the OS picks."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
    """Signal a child started with start_new_session=True and everything it forked; kill on timeout."""
    if proc.poll() is not None:
        kill_group(proc.pid, signal.SIGKILL)  # reap grandchildren a dead leader left behind
        return
    kill_group(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        proc.wait(5)
    kill_group(proc.pid, signal.SIGKILL)


def kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _stop_stale(pid: int, sig: int, name: str, binary: Path) -> None:
    """Stop a server left running by a launcher that was killed, so its data dir can be reused.

    Only a process running our own binary is touched: a recycled pid must not be signalled.
    """
    import psutil

    try:
        if pid <= 0 or Path(psutil.Process(pid).exe()).resolve() != binary.resolve():
            return
    except (psutil.Error, OSError):
        return
    print(f"botconsole: stopping {name}, left running from an earlier start (pid {pid})", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + 15
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ensure_traversable(path: Path) -> None:
    """Let the PostgreSQL system user walk down to its data directory.

    Adds only the search bit (o+x) to ancestors that lack it: nothing becomes listable or
    readable. Needed when the project sits under a private directory such as /root.
    """
    for ancestor in reversed(path.resolve().parents):
        mode = ancestor.stat().st_mode
        if not mode & 0o001:
            print(f"botconsole: allowing {PG_SYSTEM_USER} to traverse {ancestor} (chmod o+x)", file=sys.stderr)
            os.chmod(ancestor, mode | 0o001)


def _wait_until(name: str, check: Callable[[], bool], proc: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error = "not ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceStartError(name, f"the process exited with code {proc.returncode}", log)
        try:
            if check():
                return
        except Exception as exc:  # the server is still coming up; keep the reason for the message
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise ServiceStartError(name, f"not ready within {READY_TIMEOUT_S:.0f} s ({last_error})", log)


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[Any]
    log: Path


@dataclass
class VaultKeys:
    """What `bao operator init` returned; local use only, kept in a 0600 file."""

    unseal_key: str
    root_token: str


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
        starters: dict[str, Callable[[], Callable[[], None]]] = {
            "postgres": lambda: self._start_postgres(ports["postgres"]),
            "valkey": lambda: self._start_valkey(ports["valkey"]),
            "openbao": lambda: self._start_openbao(ports["openbao"], ports["openbao_cluster"]),
        }
        try:
            # Launch all processes first, then wait: the servers boot in parallel.
            finishers = [starters[name]() for name in self.want]
            for finish in finishers:
                finish()
        except MissingPackage as exc:
            self.stop()
            raise ServiceStartError("a backing server", str(exc), None) from None
        except BaseException:
            self.stop()
            raise
        return dict(self.env)

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
                _stop_stale(int(pidfile.read_text().split()[0]), sig, label, binary)

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

    # -- PostgreSQL ------------------------------------------------------------------------

    def _pg_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
                check=True,
                capture_output=True,
            )
        return PG_SYSTEM_USER

    def _start_postgres(self, port: int) -> Callable[[], None]:
        base = self.root / "postgres"
        data = base / "data"
        log = base / "postgres.log"
        secrets_file = base / "passwords.json"
        base.mkdir(parents=True, exist_ok=True)
        user = self._pg_user()
        uid = pwd.getpwnam(user).pw_uid if user else None
        # Drop the group too: with root's group kept, Linux would apply a directory's empty
        # group bits instead of its "other" bits and refuse the way to the data directory.
        as_user: dict[str, Any] = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
        if uid is not None:
            _ensure_traversable(base)
            os.chown(base, uid, -1)
            log.touch()
            os.chown(log, uid, -1)

        stored = read_json(secrets_file)
        if not (data / "PG_VERSION").exists():
            if data.exists():
                shutil.rmtree(data)  # a half-finished initdb from an interrupted first start
            stored = {"superuser": secrets.token_urlsafe(24), "app": secrets.token_urlsafe(24)}
            write_private(secrets_file, json.dumps(stored))
            pwfile = base / ".initdb-pw"
            write_private(pwfile, stored["superuser"])
            if uid is not None:
                os.chown(pwfile, uid, -1)
            try:
                result = subprocess.run(
                    [
                        str(pg_bin("initdb")),
                        "-D",
                        str(data),
                        "--username=postgres",
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--no-locale",
                    ],
                    capture_output=True,
                    text=True,
                    **as_user,
                )
            finally:
                pwfile.unlink(missing_ok=True)
            if result.returncode != 0:
                log.write_text(result.stdout + result.stderr)
                raise ServiceStartError("PostgreSQL", "initdb failed", log)

        proc = self._spawn(
            "postgres",
            [
                str(pg_bin("postgres")),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
            ],
            log,
            **as_user,
        )

        def superuser_connect() -> Any:
            import psycopg

            return psycopg.connect(
                host="127.0.0.1",
                port=port,
                user="postgres",
                password=stored["superuser"],
                dbname="postgres",
                connect_timeout=2,
                autocommit=True,
            )

        def finish() -> None:
            def ready() -> bool:
                superuser_connect().close()
                return True

            _wait_until("PostgreSQL", ready, proc, log)
            with superuser_connect() as conn:
                self._ensure_app_database(conn, stored["app"])
            self.env["DATABASE_URL"] = f"postgres://{APP_DB_ROLE}:{stored['app']}@127.0.0.1:{port}/{APP_DB_NAME}"

        return finish

    @staticmethod
    def _ensure_app_database(conn: Any, password: str) -> None:
        from psycopg import sql

        # The application connects as a non-superuser that owns its database; CREATEDB lets the
        # test run make its throwaway test database.
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_DB_ROLE]).fetchone():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(APP_DB_ROLE), sql.Literal(password)
                )
            )
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [APP_DB_NAME]).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(APP_DB_NAME), sql.Identifier(APP_DB_ROLE))
            )

    # -- Valkey ----------------------------------------------------------------------------

    def _start_valkey(self, port: int) -> Callable[[], None]:
        base = self.root / "valkey"
        log = base / "valkey.log"
        conf = base / "valkey.conf"
        pidfile = base / "valkey.pid"
        base.mkdir(parents=True, exist_ok=True)
        password = read_json(base / "password.json").get("password") or secrets.token_urlsafe(24)
        write_private(base / "password.json", json.dumps({"password": password}))
        # The password goes in a 0600 config file, never on the command line where `ps` shows it.
        write_private(
            conf,
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    "protected-mode yes",
                    f'dir "{base}"',
                    f'pidfile "{pidfile}"',
                    "appendonly yes",
                    'save ""',
                    "daemonize no",
                    f'requirepass "{password}"',
                    "",
                ]
            ),
        )
        proc = self._spawn("valkey", [str(valkey_bin()), str(conf)], log)

        def finish() -> None:
            import redis

            def ready() -> bool:
                client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2)
                try:
                    return bool(client.ping())
                finally:
                    client.close()

            _wait_until("Valkey", ready, proc, log)
            self.env["REDIS_URL"] = f"redis://:{password}@127.0.0.1:{port}/0"

        return finish

    # -- OpenBao ---------------------------------------------------------------------------

    def _start_openbao(self, port: int, cluster_port: int) -> Callable[[], None]:
        base = self.root / "openbao"
        data = base / "data"
        log = base / "openbao.log"
        pidfile = base / "openbao.pid"
        data.mkdir(parents=True, exist_ok=True)
        os.chmod(data, 0o700)
        addr = f"http://127.0.0.1:{port}"
        write_private(
            base / "config.hcl",
            f"""# Written by botconsole's launcher for local use: loopback only, no TLS.
storage "raft" {{
  path    = "{data}"
  node_id = "botconsole-local"
}}
listener "tcp" {{
  address         = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable     = true
}}
api_addr      = "{addr}"
cluster_addr  = "http://127.0.0.1:{cluster_port}"
disable_mlock = true
ui            = false
""",
        )
        proc = self._spawn("openbao", [str(bao_bin()), "server", f"-config={base / 'config.hcl'}"], log)
        pidfile.write_text(str(proc.pid))

        def finish() -> None:

            def reachable() -> bool:
                vault.health(addr)
                return True

            _wait_until("OpenBao", reachable, proc, log)
            self.vault_keys = self._init_and_unseal(addr, base / "init.json")

            def active() -> bool:
                return vault.health(addr) == "active"

            _wait_until("OpenBao", active, proc, log)
            self.env["VAULT_ADDR"] = addr

        return finish

    @staticmethod
    def _init_and_unseal(addr: str, keys_file: Path) -> VaultKeys:

        if not vault_server.is_initialized(addr):
            result = vault_server.initialize(addr)
            write_private(keys_file, json.dumps(result))
            print(
                f"botconsole: WARNING: OpenBao's unseal key and root token are kept in {keys_file} "
                "(mode 0600) for local use. In production keep them offline; see README.",
                file=sys.stderr,
            )
        stored = read_json(keys_file)
        if not stored:
            raise ServiceStartError(
                "OpenBao", f"it is initialized but {keys_file} with its unseal key is missing", None
            )
        keys = VaultKeys(unseal_key=stored["unseal_key"], root_token=stored["root_token"])
        vault_server.unseal(addr, keys.unseal_key)
        return keys


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
