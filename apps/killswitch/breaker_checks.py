"""What each circuit breaker looks at: the findings of one pass (no action taken here)."""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count

from apps.alerts.models import Alert
from apps.bots.models import Bot
from apps.exchanges.models import ExchangeAuthFailure
from apps.killswitch.breaker_rules import Kind, number_text
from apps.killswitch.models import BreakerRule
from apps.trading.models import BotLedger, Order
from apps.vault import client as vault

logger = logging.getLogger(__name__)


@dataclass
class Finding:
    """A breached condition for one subject, with the bots an action would halt."""

    subject: str
    message: str
    bots: list[Bot] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


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


def _fleet_ledgers(now: dt.datetime) -> tuple[list[Bot], list[BotLedger]]:
    """Live running bots and their own ledgers: the fleet's figures are the sum of the bots' own."""
    bots = _live_running_bots()
    ledgers = _ledgers(bots)
    return bots, [lg for b in bots if (lg := ledgers.get(b.pk)) is not None and lg.last_equity is not None]


def _fleet_loss(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    bots, ledgers = _fleet_ledgers(now)
    today = [lg for lg in ledgers if lg.day == _today(now) and lg.day_start_equity is not None]
    if not today or rule.threshold is None:
        return []
    loss = sum(((lg.day_start_equity or Decimal(0)) - (lg.last_equity or Decimal(0)) for lg in today), Decimal(0))
    if loss <= rule.threshold:
        return []
    return [
        Finding(
            "fleet",
            f"The live bots lost {loss:.2f} together today (the sum of each bot's own loss), beyond the fleet "
            f"limit {rule.threshold:.2f}.",
            bots,
            {"loss": str(loss), "limit": number_text(rule.threshold), "bot_count": len(today)},
        )
    ]


def _fleet_drawdown(rule: BreakerRule, now: dt.datetime) -> list[Finding]:
    bots, ledgers = _fleet_ledgers(now)
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
            f"The live bots are {drawdown:.2f}% below their summed peak equity (each bot's own), beyond the "
            f"fleet limit {number_text(rule.threshold)}%.",
            bots,
            {"drawdown_pct": f"{drawdown:.2f}", "limit_pct": number_text(rule.threshold), "bot_count": len(peaks)},
        )
    ]


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
            f"{count} live orders in the last {rule.window_s} s, beyond the limit of {number_text(rule.threshold)}; "
            f"placed by {', '.join(sorted(b.name for b in bots))}.",
            bots,
            {"orders": count, "limit": number_text(rule.threshold), "window_s": rule.window_s, "bots": sorted(bot_ids)},
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
