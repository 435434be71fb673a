"""What the embedded servers share: starting one in its own process group, waiting until it answers,
stopping it (and one a killed launcher left behind), free loopback ports, and the error naming a server
that did not come up with its log tail.

Like the rest of the launcher, this must not import Django: it runs before settings can be loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

READY_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20


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


def stop_stale(pid: int, sig: int, name: str, binary: Path) -> None:
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


def wait_until(name: str, check: Callable[[], bool], proc: subprocess.Popen[Any], log: Path) -> None:
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


class Spawn(Protocol):
    """Start a server's process, logging to `log`, and track it (EmbeddedServices._spawn)."""

    def __call__(self, name: str, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[Any]: ...
