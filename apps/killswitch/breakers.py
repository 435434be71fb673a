"""Circuit breakers: checked by the control worker every few seconds, beside the order gate.

The gate checks each order as it is placed (apps.trading.gate). These breakers look at the whole
picture, even when no order is being placed: a bot's loss or drawdown (a worker may be stuck), the
loss and drawdown of all live accounts together, a spike in the fleet's order rate, foreign orders
found by reconciliation, an exchange that keeps rejecting a key (revoked or stolen), and a Vault
that stops answering.

Each breaker has a rule (BreakerRule: enabled, threshold, window, action). When its condition
holds for a subject ("bot:<id>", "account:<uuid>", "fleet", "vault"), it trips once: a BreakerTrip
row is opened, an alert raised (stored, audited, mailed, sent to the webhook), and the action taken
— alert only, halt the affected bots, or kill everything. The trip stays open while the condition
holds, so a persisting condition acts once; it closes when the condition clears.

Only the database (and, for its own breaker, Vault) is needed: the loop runs in the control worker
whether or not the broker is up.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable
from typing import Any

from celery.signals import worker_ready
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.services import record
from apps.bots.halts import bot_halt
from apps.core.periodic import run_every
from apps.core.workers import consumes_control_queue
from apps.killswitch.breaker_checks import CHECKS, Finding, VaultProbe, _vault_unreachable
from apps.killswitch.breaker_rules import ACTOR, Action, Kind, rules_current
from apps.killswitch.models import BreakerRule, BreakerTrip
from apps.killswitch.services import kill_request

logger = logging.getLogger(__name__)


# -- tripping, acting, clearing -----------------------------------------------------------------


def _trip(rule: BreakerRule, finding: Finding) -> BreakerTrip | None:
    try:
        with transaction.atomic():
            trip = BreakerTrip.objects.create(
                kind=rule.kind,
                subject=finding.subject,
                action=rule.action,
                message=finding.message,
                data={**finding.data, "bots": [b.pk for b in finding.bots]},
            )
    except IntegrityError:  # another checker opened it first
        return None
    label = Kind(rule.kind).label
    alert_raise(
        kind="circuit_breaker",
        severity=Alert.Severity.CRITICAL,
        source=ACTOR,
        target=trip,
        message=f"Circuit breaker tripped: {label}. {finding.message} Action: {Action(rule.action).label.lower()}.",
        data={"breaker": rule.kind, "subject": finding.subject, "action": rule.action, "trip": trip.pk},
    )
    _act(rule, finding, trip)
    return trip


def _act(rule: BreakerRule, finding: Finding, trip: BreakerTrip) -> None:
    if rule.action == Action.HALT_BOT:
        for bot in finding.bots:
            bot_halt(
                bot=bot,
                reason=f"breaker:{rule.kind}",
                message=finding.message,
                by=f"circuit breaker: {Kind(rule.kind).label}",
                data={**finding.data, "breaker": rule.kind, "trip": trip.pk},
            )
    elif rule.action == Action.KILL_ALL:
        run = kill_request(actor=ACTOR, via="breaker", reason=f"Circuit breaker {rule.kind}: {finding.message}")
        BreakerTrip.objects.filter(pk=trip.pk).update(data={**trip.data, "kill_run": run.pk})


def _clear(trips: Iterable[BreakerTrip], now: dt.datetime) -> None:
    for trip in trips:
        if BreakerTrip.objects.filter(pk=trip.pk, cleared_at__isnull=True).update(cleared_at=now):
            record(
                actor=ACTOR, action="breaker.cleared", target=trip, data={"breaker": trip.kind, "subject": trip.subject}
            )


def breakers_check(*, now: dt.datetime | None = None, probe: VaultProbe | None = None) -> list[BreakerTrip]:
    """One pass over every breaker; returns the trips opened by this pass."""
    now = now or timezone.now()
    opened: list[BreakerTrip] = []
    for kind, rule in rules_current().items():
        open_trips = {t.subject: t for t in BreakerTrip.objects.filter(kind=kind, cleared_at__isnull=True)}
        if not rule.enabled:
            _clear(open_trips.values(), now)
            continue
        try:
            if kind == Kind.VAULT_UNREACHABLE:
                findings = _vault_unreachable(rule, now, probe)
            else:
                findings = CHECKS[kind](rule, now)
        except Exception:  # one failing check must not blind the others
            logger.exception("circuit breaker %s: check failed", kind)
            continue
        breached = {f.subject for f in findings}
        _clear([t for subject, t in open_trips.items() if subject not in breached], now)
        for finding in findings:
            if finding.subject in open_trips:
                continue
            trip = _trip(rule, finding)
            if trip is not None:
                opened.append(trip)
    return opened


# -- the loop in the control worker -------------------------------------------------------------

_loop_started = threading.Event()


def _loop(stop: threading.Event, every_s: float) -> None:
    run_every(stop, every_s, breakers_check, "circuit breakers")


def start_loop(stop: threading.Event | None = None) -> threading.Thread | None:
    """Start the breaker loop once per process (the control worker); None if already started."""
    if _loop_started.is_set():
        return None
    _loop_started.set()
    every_s = float(settings.BREAKERS_EVERY_S)
    thread = threading.Thread(target=_loop, args=(stop or threading.Event(), every_s), name="breakers", daemon=True)
    thread.start()
    return thread


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    # Only the control worker checks breakers; bot workers (queue bot.<id>) must not.
    if sender is not None and consumes_control_queue(sender):
        start_loop()
        logger.info("circuit breakers: checking every %s s", settings.BREAKERS_EVERY_S)
