"""The key check really runs in a separate control-worker process holding only the control token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_create
from apps.exchanges.tasks import exchange_account_check_task
from tests.harness import Harness
from tests.keys import Key
from tests.processes import process_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def control_worker(services: Harness, sandbox_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = process_env(services, token=services.tokens["control"].token, var_dir=tmp_path, sandbox_url=sandbox_url)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "botconsole",
            "worker",
            "-Q",
            "control",
            "-P",
            "solo",
            "-n",
            f"test-control-{os.getpid()}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    print(output[-3000:])


@pytest.mark.django_db(transaction=True)
def test_the_control_worker_checks_a_key_it_alone_may_read(
    new_key: Callable[..., Key], control_worker: subprocess.Popen[str]
) -> None:
    key = new_key(ip_restrict=True)
    account, _ = exchange_account_create(
        label="Checked by the worker",
        exchange_id="sandbox",
        credentials=key.form(),
        attested_no_withdrawals=False,
        actor="system:test",
    )
    ExchangeAccount.objects.filter(pk=account.pk).update(last_check_at=None, last_check_ok=None, last_check_message="")
    exchange_account_check_task.delay(str(account.id))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and control_worker.poll() is None:
        account.refresh_from_db()
        if account.last_check_at is not None:
            break
        time.sleep(0.2)
    assert control_worker.poll() is None, "the control worker died"
    assert account.last_check_ok is True and account.last_check_message == "Key OK."
