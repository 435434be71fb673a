"""Scale-out: two fleet supervisors with different host labels share the database, the broker and Vault.

Each runs only the bots of its label; a bot moves between them only while stopped; one supervisor
going away leaves the other's workers alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.test import Client

from apps.bots import fleet as fleet_mod
from apps.bots.models import Bot, FleetHost
from apps.exchanges.models import ExchangeAccount
from tests.bots.test_fleet import alive, make_bot, observed, wait_for
from tests.keys import Key
from tests.people import Person

pytestmark = pytest.mark.django_db(transaction=True)


class Supervisor:
    def __init__(self, label: str, env: dict[str, str], log: Path) -> None:
        self.label = label
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(fleet_mod.BASE_DIR / "manage.py"), "runfleet", "--poll", "0.5", "--host-label", label],
            cwd=fleet_mod.BASE_DIR,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def worker_pids(self) -> set[int]:
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return set()
        return {p.pid for p in children if "celery" in " ".join(p.cmdline())}

    def worker_of(self, bot: Bot) -> int | None:
        for pid in self.worker_pids():
            try:
                if f"bot.{bot.pk}" in psutil.Process(pid).cmdline():
                    return pid
            except psutil.NoSuchProcess:
                continue
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return int(self.proc.returncode)


@pytest.fixture
def supervisors(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str], Supervisor]]:
    started: list[Supervisor] = []

    def start(label: str) -> Supervisor:
        supervisor = Supervisor(label, worker_env, tmp_path / f"fleet-{label}.log")
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.stop()
        print(f"--- {supervisor.log.name}\n{supervisor.log.read_text(errors='replace')[-3000:]}")


def test_two_supervisors_each_run_only_the_bots_of_their_host_label(
    supervisors: Callable[[str], Supervisor], account: Callable[[str], tuple[ExchangeAccount, Key]]
) -> None:
    acct, _ = account("Scale-out")
    on_alpha = make_bot(acct, "alpha-paper", mode="paper")
    on_beta = make_bot(acct, "beta-live")  # live: the beta supervisor issues its Vault identity
    on_gamma = make_bot(acct, "gamma-paper", mode="paper")  # no supervisor has this label
    Bot.objects.filter(pk=on_alpha.pk).update(host="alpha")
    Bot.objects.filter(pk=on_beta.pk).update(host="beta")
    Bot.objects.filter(pk=on_gamma.pk).update(host="gamma")

    alpha, beta = supervisors("alpha"), supervisors("beta")
    wait_for(lambda: observed(on_alpha) == "running" and observed(on_beta) == "running", "both workers")
    alpha_worker, beta_worker = alpha.worker_of(on_alpha), beta.worker_of(on_beta)
    assert alpha_worker and beta_worker
    assert alpha.worker_pids() == {alpha_worker} and beta.worker_pids() == {beta_worker}  # nobody runs another's
    assert observed(on_gamma) == "stopped"
    assert set(FleetHost.objects.values_list("label", flat=True)) >= {"alpha", "beta"}
    assert Bot.objects.get(pk=on_beta.pk).vault_token_accessor  # the live worker logged in with its own identity

    # One machine goes away: its bots stop, the other's keep running.
    assert beta.stop() == 0
    assert not alive(beta_worker)
    assert observed(on_beta) == "stopped"
    assert alive(alpha_worker) and alpha.worker_of(on_alpha) == alpha_worker

    # Move the beta bot to alpha (it is stopped now: the fleet settled it): alpha picks it up.
    Bot.objects.filter(pk=on_beta.pk).update(host="alpha")
    moved = wait_for(lambda: alpha.worker_of(on_beta), "the moved bot's worker on alpha")
    wait_for(lambda: observed(on_beta) == "running", "the moved bot running")
    assert alpha.worker_pids() == {alpha_worker, moved}


def test_a_running_bot_cannot_be_moved_to_another_host(
    logged_in: Callable[[str], tuple[Client, Person]], account: Callable[[str], tuple[ExchangeAccount, Key]]
) -> None:
    acct, _ = account("Move")
    FleetHost.objects.create(label="beta", hostname="b", pid=1, started_at=_now(), last_seen=_now())
    bot = make_bot(acct, "mover", mode="paper")  # wanted running
    client, _ = logged_in("operator")
    form = _edit_form(client, bot) | {"host": "beta"}
    page = client.post(f"/bots/{bot.pk}/edit/", form)
    assert page.status_code == 400
    assert "Stop the bot before moving it to another host" in page.content.decode()
    assert Bot.objects.get(pk=bot.pk).host == "local"

    Bot.objects.filter(pk=bot.pk).update(desired_state="stopped", observed_state="stopped")
    assert client.post(f"/bots/{bot.pk}/edit/", form).status_code == 302
    assert Bot.objects.get(pk=bot.pk).host == "beta"
    from apps.audit.models import AuditEntry

    entry = AuditEntry.objects.get(action="bot.updated", target_id=str(bot.pk))
    assert entry.data["before"]["host"] == "local" and entry.data["after"]["host"] == "beta"

    unknown = client.post(f"/bots/{bot.pk}/edit/", form | {"host": "nowhere"})
    assert unknown.status_code == 400 and Bot.objects.get(pk=bot.pk).host == "beta"


def _now() -> Any:
    from django.utils import timezone

    return timezone.now()


def _edit_form(client: Client, bot: Bot) -> dict[str, str]:
    """The edit form's fields as the page renders them (what a browser would submit unchanged)."""
    import re

    html = client.get(f"/bots/{bot.pk}/edit/").content.decode()
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html))
    fields.update(re.findall(r'<select[^>]*name="([^"]+)"[^>]*>.*?<option value="([^"]*)" selected', html, re.S))
    fields.pop("csrfmiddlewaretoken", None)
    return fields
