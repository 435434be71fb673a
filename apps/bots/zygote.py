"""The bot worker template: a preloaded process the fleet supervisor forks bot workers from (FLEET_WORKER_MODE=fork).

A fresh `celery worker` process spends seconds and ~150 MB importing Django, Celery, the project and ccxt. The
template (`python -m apps.bots.zygote`, started by the supervisor with the environment a worker gets, minus
any identity) imports all of that once, closes every database connection, checks it runs no thread, and
freezes its objects (gc.freeze(), so that no collection in a child writes to the pages it shares). Then,
for each bot, the supervisor asks it over a socket to fork a worker, passing two descriptors the template
never reads: the worker's log file and the read end of a pipe holding the worker's identity (BOT_ID,
VAULT_ROLE_ID, VAULT_WRAPPED_SECRET_ID) as JSON. The template holds no Vault token, no SecretID, no secret
and no connection, so a worker forked from it holds none either until it logs in with its own identity
(apps.trading.runtime, at worker_ready, as a spawned worker does).

Each worker is forked twice (template -> short-lived middle process -> worker): the middle process exits at
once, and the worker is reparented to the supervisor, which made itself a child subreaper
(PR_SET_CHILD_SUBREAPER). So the supervisor waits on, signals and reaps its workers as it does spawned
ones, and a template crash leaves running workers alone (the supervisor starts a new template). Once
reparented the worker sets PR_SET_PDEATHSIG and checks that its parent is the supervisor (else it exits):
it never outlives the supervisor. It runs in its own session, so `killpg(pid)` reaches it and anything it
starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

BASE_DIR = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
FORK_TIMEOUT_S = 10.0
REPARENT_WAIT_S = 5.0  # a forked worker waits this long at most for its middle process to exit
MAX_MESSAGE = 4096
# The identity a worker receives through its pipe, and nothing else.
IDENTITY_ENV = ("BOT_ID", "VAULT_ROLE_ID", "VAULT_WRAPPED_SECRET_ID")
# Modules a `celery worker -P solo` imports when it starts: loaded in the template, shared by every worker.
PRELOAD = (
    "celery.bin.celery",
    "celery.bin.worker",
    "celery.apps.worker",
    "celery.worker.worker",
    "celery.worker.consumer",
    "celery.worker.components",
    "celery.worker.autoscale",
    "celery.worker.heartbeat",
    "celery.worker.strategy",
    "celery.worker.request",
    "celery.worker.loops",
    "celery.concurrency.solo",
    "celery.events",
    "celery.events.dispatcher",
    "celery.app.amqp",
    "celery.app.control",
    "celery.app.events",
    "celery.app.log",
    "celery.app.routes",
    "celery.worker.consumer.delayed_delivery",
    "billiard.pool",
    "billiard.dummy",
    "kombu.transport.redis",
    "kombu.matcher",
    "kombu.pidbox",
    "channels_redis.core",
    "cryptography.fernet",
    "kombu.asynchronous.hub",
    "redis",
    "psycopg",
    "hvac",
    "requests",
    "urllib3",
)


def _libc() -> Any:
    return ctypes.CDLL("libc.so.6", use_errno=True)


def _prctl(option: int, arg: int | bytes) -> None:
    if _libc().prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def child_subreaper(on: bool) -> None:
    """Adopt (on) or stop adopting the orphans among our descendants: forked workers become our children."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def set_title(name: str, title: str) -> None:
    """Name this process (`ps -o comm`, at most 15 bytes) and overwrite its command line (`ps`, /proc/<pid>/cmdline).

    The command line is the memory the kernel copied the arguments into; the title is cut to its length
    (Python keeps its own copy of argv, so nothing reads the old one).
    """
    _prctl(PR_SET_NAME, name.encode()[:15])
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    arg_start, arg_end = int(fields[45]), int(fields[46])  # fields 48 and 49 of proc(5), counted from 1
    raw = title.encode()[: arg_end - arg_start - 1]
    with contextlib.suppress(OSError), open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(arg_start)
        # The title, a NUL, then no NUL at the end of the area: the kernel then shows the command line up to
        # the first NUL (as for setproctitle(3)), i.e. the title alone rather than a row of empty arguments.
        mem.write(raw + b"\0" + b" " * (arg_end - arg_start - len(raw) - 1))


class TemplateError(Exception):
    """The template is gone or did not answer; the supervisor starts a new one."""


class ForkedProcess:
    """A forked bot worker, as the supervisor sees it: the parts of subprocess.Popen the fleet uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                # Not (or no longer) our child: it exited before it was reparented to us, or someone
                # else reaped it. Either way it does not run.
                self.returncode = 255
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"bot worker {self.pid}", timeout or 0.0)
            time.sleep(0.01)
        return code


class Template:
    """The supervisor's handle on its template process: start it, ask it to fork workers, stop it."""

    def __init__(self, env: Mapping[str, str], log: IO[bytes] | None = None, *, nice: int = 0) -> None:
        # The template gets the workers' environment without any identity.
        self.env = {k: v for k, v in env.items() if k not in IDENTITY_ENV}
        self.log = log
        self.nice = nice  # the template runs this much nicer than the supervisor; the workers it forks inherit it
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.started_at = 0.0
        self._sock: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Start the template process (it preloads in the background; `poll_ready()` says when it is done)."""
        # Forked workers are reparented to us once their middle process exits: we wait on them as on our
        # own children.
        child_subreaper(True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "apps.bots.zygote", str(theirs.fileno()), str(os.getpid())],
                env=self.env | {"PYTHONUNBUFFERED": "1"},
                cwd=BASE_DIR,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT if self.log else None,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid(), nice=self.nice),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        self.ready = False
        self.started_at = time.monotonic()
        logger.info("fleet: bot worker template starting (pid %s)", self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def poll_ready(self, timeout: float = 0.0) -> bool:
        """Whether the template finished preloading (waits up to `timeout` seconds for it)."""
        if self.ready:
            return True
        if self._sock is None or not self.alive():
            return False
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self._sock], [], [], left)
            if readable:
                message = self._sock.recv(MAX_MESSAGE)
                if not message:
                    return False
                if json.loads(message).get("ready"):
                    self.ready = True
                    logger.info(
                        "fleet: bot worker template ready (pid %s, %.1f s)",
                        self.pid,
                        time.monotonic() - self.started_at,
                    )
                    return True
            if time.monotonic() >= deadline or not self.alive():
                return False

    def fork(self, bot_id: int, identity: Mapping[str, str], log: IO[bytes] | None) -> ForkedProcess:
        """Fork a worker for `bot_id`; its identity goes through a pipe only the worker reads."""
        if self._sock is None or not self.ready or not self.alive():
            raise TemplateError("the bot worker template is not ready")
        payload = json.dumps({k: identity[k] for k in IDENTITY_ENV if k in identity}).encode()
        read_end, write_end = os.pipe()
        try:
            # A few hundred bytes: fits in the pipe's buffer, so writing before the worker reads cannot block.
            os.write(write_end, payload)
            os.close(write_end)
            write_end = -1
            fds = [read_end] + ([log.fileno()] if log is not None else [])
            self._sock.settimeout(FORK_TIMEOUT_S)
            try:
                socket.send_fds(self._sock, [json.dumps({"bot_id": bot_id}).encode()], fds)
                answer = self._sock.recv(MAX_MESSAGE)
            except OSError as exc:
                raise TemplateError(f"the bot worker template did not answer ({type(exc).__name__})") from exc
            finally:
                self._sock.settimeout(None)
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
        if not answer:
            raise TemplateError("the bot worker template closed its socket")
        reply = json.loads(answer)
        if "pid" not in reply:
            raise TemplateError(f"the bot worker template could not fork: {reply.get('error', '?')}")
        return ForkedProcess(int(reply["pid"]))

    def stop(self, timeout: float = 5.0) -> None:
        if self._sock is not None:
            self._sock.close()  # the template exits when its socket closes
            self._sock = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.ready = False


def die_with_parent(parent: int, *, nice: int = 0) -> Callable[[], None]:
    """A preexec_fn: the child gets SIGTERM when `parent` (the process starting it) dies, even before the exec;
    with `nice`, it runs that much nicer than its parent.

    PR_SET_PDEATHSIG survives the exec of a program that is not set-user-ID, so the worker keeps it; a parent that died
    between the fork and the prctl would never signal, hence the check that the child is still its parent's.
    """

    def preexec() -> None:
        with contextlib.suppress(Exception):
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if nice:
            os.nice(nice)
        if os.getppid() != parent:
            os._exit(1)  # the parent is gone already: do not run unsupervised

    return preexec


# -- inside the template process -------------------------------------------------------------


def _preload() -> Any:
    """Import everything a bot worker needs, then drop what must not be shared; returns the Celery app."""
    import django  # late: the template sets Django up itself, before anything reads settings

    django.setup()
    from celery.app.utils import find_app  # late: after django.setup()
    from django.core.checks import run_checks  # late: after django.setup()
    from django.db import connections  # late: after django.setup()

    from apps.exchanges import port  # late: after django.setup(); loads ccxt (sync only) for every worker

    # What `celery -A botconsole worker` loads: the app, and every app's tasks (apps.trading.tasks among them).
    app = find_app("botconsole")
    app.loader.import_default_modules()
    app.finalize(auto=True)
    for name in PRELOAD:
        importlib.import_module(name)
    port.supported_exchanges()  # builds the venue table once
    # The system checks a Celery worker runs at start (its Django fixup), run once here for every worker: same
    # code, same settings. They load URLconfs and caches that the workers then share instead of building each.
    run_checks()
    os.environ["CELERY_SKIP_CHECKS"] = "1"
    # Nothing a worker may inherit: no connection (each worker opens its own), no thread (fork copies none).
    connections.close_all()
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if threads:
        raise RuntimeError(f"the template runs threads {threads}: forking it would be unsafe")
    for name in ("VAULT_TOKEN", "VAULT_SECRET_ID", *IDENTITY_ENV):
        os.environ.pop(name, None)
    # No collection before freezing: it would leave holes in the shared pages that each worker's first
    # allocations then fill, copying the page (the collector is off since main(); gc.freeze's own advice).
    gc.freeze()
    return app


def _serve(sock: socket.socket, app: Any, supervisor: int) -> None:
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 2)
        except OSError:
            return
        if not message:
            return  # the supervisor closed its end (or died)
        try:
            bot_id = int(json.loads(message)["bot_id"])
            identity_fd, log_fd = fds[0], (fds[1] if len(fds) > 1 else -1)
            pid = _fork_worker(sock, app, supervisor, bot_id, identity_fd, log_fd)
            answer: dict[str, Any] = {"pid": pid}
        except Exception as exc:
            answer = {"error": type(exc).__name__}
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        sock.send(json.dumps(answer).encode())


def _fork_worker(sock: socket.socket, app: Any, supervisor: int, bot_id: int, identity_fd: int, log_fd: int) -> int:
    pid_r, pid_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        code = 1
        try:
            os.close(pid_r)
            # Taken before the fork: read in the worker, os.getppid() is already the supervisor's pid when the
            # middle process exited first, and the worker then waited out the whole reparenting deadline (5 s).
            middle_pid = os.getpid()
            worker = os.fork()
            if worker == 0:
                os.close(pid_w)
                _become_worker(
                    sock,
                    app,
                    supervisor,
                    middle_pid=middle_pid,
                    bot_id=bot_id,
                    identity_fd=identity_fd,
                    log_fd=log_fd,
                )
            os.write(pid_w, str(worker).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(pid_w)
    with os.fdopen(pid_r, "rb") as fh:
        raw = fh.read()
    os.waitpid(middle, 0)  # the worker is the supervisor's now
    if not raw:
        raise RuntimeError("the middle process reported no worker")
    return int(raw)


def _become_worker(
    sock: socket.socket, app: Any, supervisor: int, *, middle_pid: int, bot_id: int, identity_fd: int, log_fd: int
) -> None:
    """In the forked worker: become bot `bot_id`'s Celery worker; never returns into the template's loop."""
    code = 1
    try:
        sock.close()
        os.setsid()  # own session and group: the supervisor's killpg(pid) reaches this worker and its children
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        if log_fd >= 0:
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
        deadline = time.monotonic() + REPARENT_WAIT_S
        while os.getppid() == middle_pid:
            if time.monotonic() >= deadline:
                print(f"bot {bot_id}: not reparented within {REPARENT_WAIT_S:.0f} s", file=sys.stderr, flush=True)
                break
            time.sleep(0.001)
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:
            os._exit(1)  # the supervisor is gone (or we were not reparented to it): do not run unsupervised
        set_title(f"bot-{bot_id}", f"celery worker -Q bot.{bot_id} (forked)")
        gc.enable()  # the template's objects are frozen: collections here leave the shared pages alone
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        with os.fdopen(identity_fd, "rb") as fh:
            identity = json.loads(fh.read() or b"{}")
        if str(identity.get("BOT_ID")) != str(bot_id):
            raise RuntimeError("the identity handed over is not this bot's")
        os.environ.update({k: str(v) for k, v in identity.items() if k in IDENTITY_ENV})
        del identity
        argv = worker_argv(bot_id)
        sys.argv = ["celery", *argv]
        result = app.worker_main(argv=argv)
        code = int(result or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def worker_argv(bot_id: int) -> list[str]:
    """The `celery worker` arguments of bot `bot_id` (the same as a spawned worker's)."""
    return [
        "worker",
        "-Q",
        f"bot.{bot_id}",
        "-P",
        "solo",
        "-c",
        "1",
        "-n",
        f"bot-{bot_id}@%h",
        # No mingle/gossip: a bot worker has nothing to learn from the others. No celery heartbeat: its liveness is
        # its own heartbeat in the database and its process, which the supervisor watches; celery's (an event
        # to the broker every 2 s per worker) retried an unreachable broker for ever, even in a warm shutdown.
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "--loglevel",
        "INFO",
    ]


def main(argv: Sequence[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    # The supervisor names itself: getppid() alone cannot tell it from init once the supervisor has died.
    supervisor = int(argv[1]) if len(argv) > 1 else os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:
        return 1
    set_title("bot-template", "botconsole bot worker template")
    gc.disable()  # until gc.freeze(): see _preload
    app = _preload()
    sock.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    _serve(sock, app, supervisor)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
