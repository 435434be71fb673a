from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from apps.exchanges.models import ExchangeAccount

if TYPE_CHECKING:
    from apps.bots.models import Bot


def exchange_accounts() -> QuerySet[ExchangeAccount]:
    return ExchangeAccount.objects.order_by("label")


def bots_using(account: ExchangeAccount) -> list[Bot]:
    from apps.bots.models import Bot  # bots depend on exchanges, not the other way round

    return list(Bot.objects.filter(account=account).order_by("name"))
