from __future__ import annotations

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
