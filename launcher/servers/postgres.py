"""The embedded PostgreSQL: initialized once under `<root>/postgres` (passwords kept in a 0600 file),
started on loopback with password auth, and given the application's own role and database.

When the launcher runs as root, PostgreSQL (which refuses root) runs as a system user of its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apps.core.files import pg_bin, read_json, write_private
from launcher.servers.common import ServiceStartError, Spawn, wait_until

# PostgreSQL refuses to run as root; when we are root we drop to this system user.
PG_SYSTEM_USER = "botconsole-pg"
APP_DB_NAME = "botconsole"
APP_DB_ROLE = "botconsole"
USERADD_LOCK = "/run/lock/botconsole-pg-useradd.lock"  # opened with O_NOFOLLOW: a planted link is refused
USERADD_EXISTS = 9  # useradd's exit status for "user already exists"


def pg_system_user() -> str | None:
    """The user PostgreSQL runs as when we are root (created on first use), else None: ourselves."""
    if os.geteuid() != 0:
        return None
    # Processes starting at once (make test's two pytest processes on a new machine) take turns: two useradds
    # racing each other left one process holding a uid that no longer existed.
    lock = os.open(USERADD_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            result = subprocess.run(
                ["/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
                capture_output=True,
                text=True,
            )
            if result.returncode not in (0, USERADD_EXISTS):
                failed = f"useradd {PG_SYSTEM_USER} failed: {result.stderr.strip()}"
                raise ServiceStartError("PostgreSQL", failed, None) from None
    finally:
        os.close(lock)  # closing releases the lock
    return PG_SYSTEM_USER


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


def _run_as(base: Path, log: Path) -> tuple[int | None, dict[str, Any]]:
    """The uid PostgreSQL runs as (None: ours) and the subprocess arguments that switch to it; the
    directory and log it writes are handed to that user."""
    base.mkdir(parents=True, exist_ok=True)
    user = pg_system_user()
    if user is None:
        return None, {}
    entry = pwd.getpwnam(user)
    _ensure_traversable(base)
    os.chown(base, entry.pw_uid, -1)
    log.touch()
    os.chown(log, entry.pw_uid, -1)
    # Drop the group too: with root's group kept, Linux would apply a directory's empty
    # group bits instead of its "other" bits and refuse the way to the data directory.
    return entry.pw_uid, {"user": user, "group": entry.pw_gid, "extra_groups": []}


def _initdb(base: Path, data: Path, log: Path, uid: int | None, as_user: dict[str, Any]) -> dict[str, str]:
    """A new cluster in `data` with fresh passwords (kept in base/passwords.json); returns them."""
    if data.exists():
        shutil.rmtree(data)  # a half-finished initdb from an interrupted first start
    stored = {"superuser": secrets.token_urlsafe(24), "app": secrets.token_urlsafe(24)}
    write_private(base / "passwords.json", json.dumps(stored))
    pwfile = base / ".initdb-pw"
    write_private(pwfile, stored["superuser"])
    if uid is not None:
        os.chown(pwfile, uid, -1)
    argv = [
        str(pg_bin("initdb")),
        "-D",
        str(data),
        "--username=postgres",
        f"--pwfile={pwfile}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--no-locale",
    ]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, **as_user)
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        log.write_text(result.stdout + result.stderr)
        raise ServiceStartError("PostgreSQL", "initdb failed", log)
    return stored


def _server_argv(data: Path, port: int) -> list[str]:
    return [
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
        "max_connections=300",  # a bot worker holds one connection while it runs: 100 bots and the console fit
        "-c",
        "fsync=on",
    ]


def _superuser_connect(port: int, password: str) -> Any:
    import psycopg

    return psycopg.connect(
        host="127.0.0.1",
        port=port,
        user="postgres",
        password=password,
        dbname="postgres",
        connect_timeout=2,
        autocommit=True,
    )


def ensure_app_database(conn: Any, password: str) -> None:
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


def start_postgres(base: Path, port: int, spawn: Spawn) -> Callable[[], str]:
    """Launch PostgreSQL (initializing its cluster on the first start); the returned step waits until it
    answers, makes the application's role and database, and returns the application's DATABASE_URL."""
    data = base / "data"
    log = base / "postgres.log"
    uid, as_user = _run_as(base, log)
    stored = read_json(base / "passwords.json")
    if not (data / "PG_VERSION").exists():
        stored = _initdb(base, data, log, uid, as_user)
    proc = spawn("postgres", _server_argv(data, port), log, **as_user)

    def finish() -> str:
        def ready() -> bool:
            _superuser_connect(port, stored["superuser"]).close()
            return True

        wait_until("PostgreSQL", ready, proc, log)
        with _superuser_connect(port, stored["superuser"]) as conn:
            ensure_app_database(conn, stored["app"])
        return f"postgres://{APP_DB_ROLE}:{stored['app']}@127.0.0.1:{port}/{APP_DB_NAME}"

    return finish
