"""A process's Vault client keeps a connection per concurrent caller (the kill reads every account's key at once)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import psutil
import pytest

from apps.vault import client as vault


def _server_pid(addr: str) -> int:
    port = urlparse(addr).port
    listening = psutil.net_connections(kind="tcp")
    return int(next(c.pid for c in listening if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid))


def test_twenty_reads_at_once_keep_their_twenty_connections(
    root_vault: vault.ProcessVault, caplog: pytest.LogCaptureFixture
) -> None:
    path = f"test-pool/{uuid.uuid4().hex}"
    root_vault.kv_write(path, {"value": "x"})
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    server = _server_pid(root_vault.addr)
    # OpenBao frozen for a moment, so that all twenty reads are in flight at once, each on its own connection.
    os.kill(server, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(20) as pool:
            reads = [pool.submit(root_vault.kv_read, path) for _ in range(20)]
            threading.Event().wait(0.5)
            os.kill(server, signal.SIGCONT)
            assert [r.result(timeout=10)["value"] for r in reads] == ["x"] * 20
    finally:
        os.kill(server, signal.SIGCONT)
    # With requests' default pool of 10 connections, the other ten were thrown away after each such burst.
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
