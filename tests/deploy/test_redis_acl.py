"""deploy/redis/users.acl on a real Valkey: botconsole's real traffic passes, nothing else does.

A private Valkey loads the shipped ACL (only the password hash substituted, plus a test-only `probe`
user that reads the ACL log). A control worker started exactly as its systemd unit starts it, the
Channels layer, and the fleet's, dead-man's and kill switch's own keys then run as the `botconsole`
user; the ACL log must show no refused command. Then the refusals themselves are checked.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from celery import Celery
from channels_redis.core import RedisChannelLayer
from redis.backoff import NoBackoff
from redis.retry import Retry

from apps.audit.models import AuditVerification
from apps.core.files import valkey_bin
from launcher.embedded import free_port
from tests.deploy.conftest import DEPLOY, ROOT
from tests.harness import Harness
from tests.processes import process_env

ACL = DEPLOY / "redis" / "users.acl"
PLACEHOLDER = "#REPLACE_WITH_THE_SHA256_OF_THE_PASSWORD"


@dataclass
class Server:
    port: int
    password: str
    probe_password: str

    @property
    def url(self) -> str:
        return f"redis://botconsole:{self.password}@127.0.0.1:{self.port}/0"

    def probe(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, username="probe", password=self.probe_password)


def start_valkey(tmp: Path, acl_text: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    acl = tmp / "users.acl"
    acl.write_text(acl_text)
    conf = tmp / "valkey.conf"
    conf.write_text(
        f'bind 127.0.0.1\nport {port}\ndir "{tmp}"\nsave ""\nappendonly no\ndaemonize no\naclfile "{acl}"\n'
        f'logfile "{tmp / "valkey.log"}"\n'
    )
    return subprocess.Popen([str(valkey_bin()), str(conf)], start_new_session=True), port


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("valkey")
    password, probe_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    text = ACL.read_text()
    assert PLACEHOLDER in text
    text = text.replace(PLACEHOLDER, "#" + hashlib.sha256(password.encode()).hexdigest())
    # Test-only: a user allowed to read the ACL log. Not part of the shipped file.
    text += f"user probe on >{probe_password} ~* &* +@all\n"
    proc, port = start_valkey(tmp, text)
    found = Server(port, password, probe_password)
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, (tmp / "valkey.log").read_text()
        try:
            if found.probe().ping():
                break
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    yield found
    stop(proc)


def acl_refusals(server: Server) -> list[str]:
    entries = server.probe().acl_log()
    return [f"{e['username']}: {e['reason']} {e['object']}" for e in entries if e["username"] != "probe"]


def control_unit_argv() -> list[str]:
    """The control worker's command line from its systemd unit, with this checkout's Python."""
    unit = (DEPLOY / "systemd" / "botconsole-control.service").read_text()
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart=").replace("%%", "%"))
    return [sys.executable, *argv[1:]]


@pytest.mark.django_db(transaction=True)
def test_botconsole_traffic_passes_the_acl(server: Server, services: Harness, tmp_path: Path) -> None:
    server.probe().acl_log_reset()

    # A control worker as its unit starts it (prefork, mingle, gossip, events), on this server.
    env = process_env(
        services,
        token=services.tokens["control"].token,
        var_dir=tmp_path,
        REDIS_URL=server.url,
        AUDIT_CHECKPOINT_FILE=str(tmp_path / "checkpoints.jsonl"),
    )
    worker = subprocess.Popen(
        control_unit_argv(),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # Not the current app: shared tasks queued by later tests must keep using botconsole's own broker.
    app = Celery("botconsole-acl-test", broker=server.url, set_as_current=False)
    app.conf.update(accept_content=["json"], task_serializer="json", task_default_queue="control")
    try:
        deadline = time.monotonic() + 60
        replies: list[dict[str, Any]] | None = []
        while not replies and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stdout.read().decode()[-3000:] if worker.stdout else ""
            replies = app.control.ping(timeout=1.0)
        assert replies, "the control worker never answered a broadcast ping"
        app.send_task("apps.audit.tasks.audit_verify_task", queue="control")
        while not AuditVerification.objects.filter(source="system:control-worker").exists():
            assert time.monotonic() < deadline, "the control worker did not run the task"
            time.sleep(0.2)
        stats = app.control.inspect(timeout=2.0).stats()
        assert stats, "inspect (broadcast + replies) failed"
    finally:
        app.close()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)

    # The Channels layer: direct messages, groups, and the health check's echo.
    layer = RedisChannelLayer(hosts=[server.url], capacity=10, expiry=10)

    async def channels_round_trip() -> list[dict[str, str]]:
        channel = await layer.new_channel()
        await layer.group_add("live", channel)
        await layer.group_send("live", {"type": "live.event", "text": "to the group"})
        await layer.send(channel, {"type": "live.event", "text": "direct"})
        received = [await layer.receive(channel), await layer.receive(channel)]
        await layer.group_discard("live", channel)
        await layer.close_pools()
        return received

    received = async_to_sync(channels_round_trip)()
    assert sorted(m["text"] for m in received) == ["direct", "to the group"]

    # What the fleet, the dead-man's switch, the kill switch's purge and the metrics do with Redis.
    r = redis.Redis.from_url(server.url)
    r.set("botconsole:bot:1:token-accessor", "accessor", ex=60)
    r.set("botconsole:bot:1:deadman", '{"ok": true}', ex=60)
    assert r.get("botconsole:bot:1:token-accessor") == b"accessor"
    pipe = r.pipeline()
    for name in ("bot.1", "bot.1\x06\x163", "bot.1\x06\x166", "bot.1\x06\x169"):
        pipe.llen(name)
    pipe.hlen("unacked")
    pipe.execute()
    r.delete("bot.1", "botconsole:bot:1:token-accessor", "botconsole:bot:1:deadman")
    r.close()

    assert acl_refusals(server) == []


def test_the_acl_refuses_strangers_and_dangerous_commands(server: Server) -> None:
    server.probe().acl_log_reset()
    # No retries: redis-py retries a failed connection (with backoff) by default.
    once = {"host": "127.0.0.1", "port": server.port, "retry": Retry(NoBackoff(), 0)}
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**once).ping()  # type: ignore[arg-type]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**once, password=server.password).ping()  # type: ignore[arg-type]  # as "default"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(**once, username="botconsole", password="wrong").ping()  # type: ignore[arg-type]

    r = redis.Redis.from_url(server.url)
    refused = {
        "FLUSHALL": ("FLUSHALL",),
        "CONFIG": ("CONFIG", "SET", "appendonly", "no"),
        "KEYS": ("KEYS", "*"),
        "ACL": ("ACL", "SETUSER", "intruder", "on", ">pw", "+@all"),
        "SHUTDOWN": ("SHUTDOWN",),
        "REPLICAOF": ("REPLICAOF", "127.0.0.1", "1"),
        "MONITOR": ("MONITOR",),
        "FUNCTION": ("FUNCTION", "FLUSH"),
        "MODULE": ("MODULE", "LIST"),
    }
    for name, command in refused.items():
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command(*command)  # type: ignore[no-untyped-call]
        assert any(name.lower() in entry for entry in acl_refusals(server)), name
    r.close()
    assert server.probe().ping()  # still up: SHUTDOWN was refused
