from __future__ import annotations

from django.db.models import QuerySet

from apps.exchanges.models import ExchangeAccount


def exchange_accounts() -> QuerySet[ExchangeAccount]:
    return ExchangeAccount.objects.order_by("label")


def bots_using(account: ExchangeAccount) -> list[object]:
    """Every object that references the account (bots, once they exist)."""
    related = [f for f in ExchangeAccount._meta.related_objects if f.one_to_many]
    users: list[object] = []
    for rel in related:
        model = rel.related_model
        assert not isinstance(model, str)
        users.extend(model._default_manager.filter(**{rel.field.name: account}))
    return users
