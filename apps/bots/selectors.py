from __future__ import annotations

from typing import Any

from apps.audit.models import AuditEntry
from apps.bots.models import DEFAULT_HOST, Bot, FleetHost
from apps.exchanges.models import ExchangeAccount


def host_labels(current: str | None = None) -> list[str]:
    """Host labels a bot may run on: every fleet supervisor that has reported in, and the bot's own."""
    labels = set(FleetHost.objects.values_list("label", flat=True)) | {current or DEFAULT_HOST}
    return sorted(labels)


def fleet_hosts() -> list[FleetHost]:
    return list(FleetHost.objects.all())


def bots_using(account: ExchangeAccount) -> list[Bot]:
    return list(Bot.objects.filter(account=account).order_by("name"))


def archived_count() -> int:
    return Bot.objects.filter(archived_at__isnull=False).count()


def bot_start_problem(bot: Bot) -> dict[str, Any] | None:
    """Why the bot's worker is not running, while the fleet shows it in error: the supervisor's last word on it
    (audited when a worker could not be started or exited), e.g. "vault: Vault is sealed (...)"; None otherwise."""
    if bot.observed_state != Bot.Observed.ERROR:
        return None
    entry = (
        AuditEntry.objects.filter(action="bot.worker_crashed", target_type=Bot._meta.label_lower, target_id=str(bot.pk))
        .order_by("-seq")
        .first()
    )
    if entry is None or not isinstance(entry.data, dict):
        return None
    return {
        "reason": str(entry.data.get("reason", "")),
        "retry_in_s": entry.data.get("restart_in_s"),
        "at": entry.created_at,
    }
