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
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from celery.signals import worker_ready
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from apps.accounts.models import User
from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.services import record
from apps.bots.halts import bot_halt
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.core.periodic import run_every
from apps.core.workers import consumes_control_queue
from apps.exchanges.models import ExchangeAuthFailure
from apps.killswitch.models import BreakerRule, BreakerTrip
from apps.killswitch.services import kill_request
from apps.trading.models import BotLedger, Order
from apps.vault import client as vault

logger = logging.getLogger(__name__)

ACTOR = "system:breakers"
Kind = BreakerRule.Kind
Action = BreakerRule.Action


@dataclass(frozen=True)
class Default:
    action: str
    threshold: Decimal | None
    window_s: int
    # What the threshold means, shown on the breakers page; None: the kind has no threshold.
    threshold_help: str | None
    window_help: str | None = None
    # The business range of the threshold (both ends included) and whether it counts whole events.
    threshold_range: tuple[Decimal, Decimal] = (Decimal(0), Decimal(0))
    whole: bool = True


_COUNT = (Decimal(1), Decimal(100_000))
DEFAULTS: dict[str, Default] = {
    Kind.BOT_DAILY_LOSS: Default(Action.HALT_BOT, None, 0, None),
    Kind.BOT_DRAWDOWN: Default(Action.HALT_BOT, None, 0, None),
    Kind.FLEET_DAILY_LOSS: Default(
        Action.KILL_ALL,
        Decimal("1000"),
        0,
        "Loss since the start of the UTC day, summed over live accounts (quote)",
        threshold_range=(Decimal("0.01"), Decimal(1_000_000_000)),
        whole=False,
    ),
    Kind.FLEET_DRAWDOWN: Default(
        Action.KILL_ALL,
        Decimal("20"),
        0,
        "Percent below the summed peak equity of live accounts",
        threshold_range=(Decimal("0.01"), Decimal(100)),
        whole=False,
    ),
    Kind.ORDER_RATE: Default(
        Action.HALT_BOT,
        Decimal("120"),
        60,
        "Live orders placed by all bots within the window",
        "Window (seconds)",
        threshold_range=_COUNT,
    ),
    Kind.FOREIGN_ORDERS: Default(
        Action.HALT_BOT,
        Decimal("1"),
        3600,
        "Foreign orders found on one account within the window",
        "Window (seconds)",
        threshold_range=_COUNT,
    ),
    Kind.AUTH_ERRORS: Default(
        Action.HALT_BOT,
        Decimal("3"),
        300,
        "Key rejections by the exchange for one account within the window",
        "Window (seconds)",
        threshold_range=_COUNT,
    ),
    Kind.VAULT_UNREACHABLE: Default(
        Action.ALERT,
        Decimal("3"),
        0,
        "Consecutive failed Vault health checks",
        threshold_range=(Decimal(1), Decimal(1000)),
    ),
}
WINDOW_MAX_S = 7 * 86400
THRESHOLD_DECIMALS = 8  # BreakerRule.threshold
INPUT_MAX = 40  # characters of a typed number: far more than any number in range needs


@dataclass
class Finding:
    """A breached condition for one subject, with the bots an action would halt."""

    subject: str
    message: str
    bots: list[Bot] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


# -- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleView:
    rule: BreakerRule
    label: str
    threshold_help: str | None
    window_help: str | None


def rules_for_page() -> list[RuleView]:
    rules = rules_current()
    return [
        RuleView(rules[kind], Kind(kind).label, default.threshold_help, default.window_help)
        for kind, default in DEFAULTS.items()
    ]


def rules_current() -> dict[str, BreakerRule]:
    """Every breaker's rule, creating the missing ones with their defaults."""
    rules = {rule.kind: rule for rule in BreakerRule.objects.all()}
    for kind, default in DEFAULTS.items():
        if kind not in rules:
            rules[kind], _ = BreakerRule.objects.get_or_create(
                kind=kind,
                defaults={"action": default.action, "threshold": default.threshold, "window_s": default.window_s},
            )
    return rules


def breaker_rule_update(
    *,
    actor: User,
    kind: str,
    enabled: bool,
    action: str,
    threshold: Decimal | None,
    window_s: int | None,
    request: Any = None,
) -> BreakerRule:
    """Change one breaker's rule (admins, behind step-up in the view); audited with before and after."""
    if kind not in DEFAULTS:
        raise ApplicationError(f"Unknown circuit breaker {kind[:50]!r}.")
    if action not in Action.values:
        raise ApplicationError(f"Unknown action {action[:50]!r}.")
    default = DEFAULTS[kind]
    threshold = _threshold_checked(kind, default, threshold) if default.threshold_help is not None else None
    if default.window_help is not None:
        if window_s is None or window_s < 1 or window_s > WINDOW_MAX_S:
            raise ApplicationError(f"The window must be between 1 and {WINDOW_MAX_S} seconds (7 days).")
    else:
        window_s = default.window_s
    rule = rules_current()[kind]
    before = _rule_data(rule)
    rule.enabled, rule.action, rule.threshold, rule.window_s = enabled, action, threshold, window_s
    after = _rule_data(rule)
    if before == after:
        return rule
    with transaction.atomic():
        rule.save()
        record(
            actor=actor,
            action="breaker.rule_changed",
            target=rule,
            request=request,
            data={"kind": kind, "before": before, "after": after},
        )
    return rule


def _threshold_checked(kind: str, default: Default, threshold: Decimal | None) -> Decimal:
    low, high = default.threshold_range
    what = f"The threshold of {Kind(kind).label.lower()}"
    unit = "a whole number" if default.whole else "a number"
    if threshold is None or not threshold.is_finite():
        raise ApplicationError(f"{what} must be {unit} between {_num(low)} and {_num(high)}.")
    if not low <= threshold <= high:
        raise ApplicationError(f"{what} must be between {_num(low)} and {_num(high)}; nothing was changed.")
    if default.whole and threshold != threshold.to_integral_value():
        raise ApplicationError(f"{what} counts events: give a whole number between {_num(low)} and {_num(high)}.")
    if -threshold.normalize().as_tuple().exponent > THRESHOLD_DECIMALS:  # type: ignore[operator]
        raise ApplicationError(f"{what} takes at most {THRESHOLD_DECIMALS} decimal places.")
    return threshold


def _typed(raw: str | None, what: str) -> str:
    """A typed number as text: stripped, short, plain characters only (the field is shown back in messages)."""
    text = (raw or "").strip()
    if len(text) > INPUT_MAX:
        raise ApplicationError(f"The {what} is too long to be a number in range ({len(text)} characters).")
    if not text.isascii() or not text.isprintable():
        raise ApplicationError(f"The {what} must be typed with plain digits (no control or special characters).")
    return text


def breaker_rule_update_from_input(
    *, actor: User, kind: str, data: Mapping[str, str], request: Any = None
) -> BreakerRule:
    """The same, from a submitted form: text fields parsed here, every error a clear message."""
    raw_threshold = _typed(data.get("threshold"), "threshold")
    raw_window = _typed(data.get("window_s"), "window")
    raw_action = (data.get("action") or "").strip()
    if raw_action not in Action.values:
        choices = ", ".join(str(label).lower() for label in Action.labels)
        raise ApplicationError(f"Choose what the breaker does: {choices}.")
    try:
        threshold = Decimal(raw_threshold) if raw_threshold else None
    except InvalidOperation:
        raise ApplicationError(f"The threshold {raw_threshold!r} is not a number.") from None
    if not raw_window:
        window_s = None
    elif raw_window.isdigit():
        window_s = int(raw_window)
    else:
        raise ApplicationError(f"The window {raw_window!r} is not a whole number of seconds.")
    return breaker_rule_update(
        actor=actor,
        kind=kind,
        enabled=data.get("enabled") == "on",
        action=raw_action,
        threshold=threshold,
        window_s=window_s,
        request=request,
    )


def _rule_data(rule: BreakerRule) -> dict[str, Any]:
    return {
        "enabled": rule.enabled,
        "action": rule.action,
        "threshold": None if rule.threshold is None else _num(rule.threshold),
        "window_s": rule.window_s,
    }


# -- recording what the checks count ------------------------------------------------------------


# -- the checks ---------------------------------------------------------------------------------


def _live_running_bots() -> list[Bot]:
    return list(Bot.objects.select_related("account").filter(mode=Bot.Mode.LIVE, desired_state=Bot.Desired.RUNNING))


def _ledgers(bots: Iterable[Bot]) -> dict[int, BotLedger]:
    return {ledger.bot_id: ledger for ledger in BotLedger.objects.filter(bot__in=list(bots))}


def _today(now: dt.datetime) -> dt.date:
    return now.astimezone(dt.UTC).date()


def _bot_loss(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    bots = [b for b in Bot.objects.select_related("account").filter(desired_state=Bot.Desired.RUNNING)]
    ledgers = _ledgers(bots)
    findings = []
    for bot in bots:
        ledger = ledgers.get(bot.pk)
        if ledger is None or ledger.last_equity is None or ledger.day_start_equity is None:
            continue
        if ledger.day != _today(now):
            continue  # a stale day: the bot has not ticked today
        loss = ledger.day_start_equity - ledger.last_equity
        if loss > bot.daily_loss_limit:
            findings.append(
                Finding(
                    f"bot:{bot.pk}",
                    f"Bot {bot.name} lost {loss:.2f} today, beyond its daily loss limit {bot.daily_loss_limit:.2f}.",
                    [bot],
                    {"bot": bot.pk, "loss": str(loss), "limit": str(bot.daily_loss_limit)},
                )
            )
    return findings


def _bot_drawdown(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    bots = list(Bot.objects.select_related("account").filter(desired_state=Bot.Desired.RUNNING))
    ledgers = _ledgers(bots)
    findings = []
    for bot in bots:
        ledger = ledgers.get(bot.pk)
        if ledger is None or ledger.last_equity is None or not ledger.peak_equity:
            continue
        drawdown = (ledger.peak_equity - ledger.last_equity) / ledger.peak_equity * 100
        if drawdown > bot.max_drawdown_pct:
            findings.append(
                Finding(
                    f"bot:{bot.pk}",
                    f"Bot {bot.name} is {drawdown:.2f}% below its peak equity, beyond its "
                    f"{bot.max_drawdown_pct}% limit.",
                    [bot],
                    {"bot": bot.pk, "drawdown_pct": f"{drawdown:.2f}", "limit_pct": str(bot.max_drawdown_pct)},
                )
            )
    return findings


def _per_account_ledgers(now: dt.datetime) -> tuple[list[Bot], list[BotLedger]]:
    """Live running bots, and one ledger per account (bots of one account share its equity)."""
    bots = _live_running_bots()
    ledgers = _ledgers(bots)
    newest: dict[Any, BotLedger] = {}
    for bot in bots:
        ledger = ledgers.get(bot.pk)
        if ledger is None or ledger.last_equity is None or ledger.equity_at is None:
            continue
        current = newest.get(bot.account_id)
        if current is None or (current.equity_at or now) < ledger.equity_at:
            newest[bot.account_id] = ledger
    return bots, list(newest.values())


def _fleet_loss(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    bots, ledgers = _per_account_ledgers(now)
    today = [lg for lg in ledgers if lg.day == _today(now) and lg.day_start_equity is not None]
    if not today or rule.threshold is None:
        return []
    loss = sum(((lg.day_start_equity or Decimal(0)) - (lg.last_equity or Decimal(0)) for lg in today), Decimal(0))
    if loss <= rule.threshold:
        return []
    return [
        Finding(
            "fleet",
            f"The live accounts lost {loss:.2f} together today, beyond the fleet limit {rule.threshold:.2f}.",
            bots,
            {"loss": str(loss), "limit": _num(rule.threshold), "accounts": len(today)},
        )
    ]


def _fleet_drawdown(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    bots, ledgers = _per_account_ledgers(now)
    peaks = [lg for lg in ledgers if lg.peak_equity]
    peak = sum((lg.peak_equity or Decimal(0) for lg in peaks), Decimal(0))
    if not peaks or peak <= 0 or rule.threshold is None:
        return []
    last = sum((lg.last_equity or Decimal(0) for lg in peaks), Decimal(0))
    drawdown = (peak - last) / peak * 100
    if drawdown <= rule.threshold:
        return []
    return [
        Finding(
            "fleet",
            f"The live accounts are {drawdown:.2f}% below their summed peak equity, beyond the fleet limit "
            f"{_num(rule.threshold)}%.",
            bots,
            {"drawdown_pct": f"{drawdown:.2f}", "limit_pct": _num(rule.threshold), "accounts": len(peaks)},
        )
    ]


def _num(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _since(rule: BreakerRule, now: dt.datetime) -> dt.datetime:
    return now - dt.timedelta(seconds=rule.window_s)


def _order_rate(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    if rule.threshold is None:
        return []
    recent = Order.objects.filter(paper=False, created_at__gte=_since(rule, now))
    count = recent.count()
    if count <= rule.threshold:
        return []
    bot_ids = set(recent.values_list("bot_id", flat=True))
    bots = list(Bot.objects.select_related("account").filter(pk__in=bot_ids))
    return [
        Finding(
            "fleet",
            f"{count} live orders in the last {rule.window_s} s, beyond the limit of {_num(rule.threshold)}; "
            f"placed by {', '.join(sorted(b.name for b in bots))}.",
            bots,
            {"orders": count, "limit": _num(rule.threshold), "window_s": rule.window_s, "bots": sorted(bot_ids)},
        )
    ]


def _per_account(rule: BreakerRule, counts: dict[str, int], what: str) -> list[Finding]:
    if rule.threshold is None:
        return []
    findings = []
    breached = {account: n for account, n in counts.items() if n >= rule.threshold}
    bots_by_account: dict[str, list[Bot]] = defaultdict(list)
    for bot in Bot.objects.select_related("account").filter(account_id__in=list(breached)):
        bots_by_account[str(bot.account_id)].append(bot)
    for account, n in sorted(breached.items()):
        bots = bots_by_account.get(account, [])
        label = bots[0].account.label if bots else account
        findings.append(
            Finding(
                f"account:{account}",
                f"{n} {what} on account {label} in the last {rule.window_s} s.",
                bots,
                {"account": account, "count": n, "window_s": rule.window_s},
            )
        )
    return findings


def _foreign_orders(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    counts: dict[str, int] = defaultdict(int)
    for data in Alert.objects.filter(kind="foreign_order", created_at__gte=_since(rule, now)).values_list(
        "data", flat=True
    ):
        account = (data or {}).get("account")
        if account:
            counts[str(account)] += 1
    return _per_account(rule, counts, "foreign order(s) found")


def _auth_errors(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    rows = (
        ExchangeAuthFailure.objects.filter(created_at__gte=_since(rule, now))
        .values("account_id")
        .annotate(n=Count("id"))
    )
    counts = {str(row["account_id"]): int(row["n"]) for row in rows}
    return _per_account(rule, counts, "key rejection(s) by the exchange")


class VaultProbe:
    """Counts consecutive failed Vault health checks (kept in the checking process)."""

    def __init__(self, check: Callable[[], str] | None = None) -> None:
        self.failures = 0
        self.last_error = ""
        self._check = check or (lambda: vault.health(settings.VAULT_ADDR))

    def probe(self) -> None:
        try:
            state = self._check()
        except vault.VaultError as exc:
            self.failures += 1
            self.last_error = type(exc).__name__
            return
        if state in ("active", "standby"):
            self.failures, self.last_error = 0, ""
        else:
            self.failures += 1
            self.last_error = state


_probe = VaultProbe()


def _vault_unreachable(rule: BreakerRule, now: dt.datetime, probe: VaultProbe | None = None) -> list[Finding]:
    probe = probe or _probe
    probe.probe()
    if rule.threshold is None or probe.failures < rule.threshold:
        return []
    return [
        Finding(
            "vault",
            f"Vault has failed {probe.failures} health checks in a row ({probe.last_error}): bots cannot renew "
            "their identities, keys cannot be read or rotated.",
            _live_running_bots(),
            {"failures": probe.failures, "last_error": probe.last_error},
        )
    ]


CHECKS: dict[str, Callable[[BreakerRule, dt.datetime], list[Finding]]] = {
    Kind.BOT_DAILY_LOSS: _bot_loss,
    Kind.BOT_DRAWDOWN: _bot_drawdown,
    Kind.FLEET_DAILY_LOSS: _fleet_loss,
    Kind.FLEET_DRAWDOWN: _fleet_drawdown,
    Kind.ORDER_RATE: _order_rate,
    Kind.FOREIGN_ORDERS: _foreign_orders,
    Kind.AUTH_ERRORS: _auth_errors,
    Kind.VAULT_UNREACHABLE: _vault_unreachable,
}


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
            bot_halt(bot=bot, reason=f"breaker:{rule.kind}", message=finding.message)
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
