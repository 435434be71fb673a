"""Control-worker tasks: only ids travel in messages, never a secret."""

from celery import shared_task

from apps.exchanges.models import ExchangeAccount
from apps.exchanges.services import exchange_account_check, exchange_accounts_hygiene


@shared_task
def exchange_account_check_task(account_id: str) -> bool:
    account = ExchangeAccount.objects.filter(id=account_id).first()
    return account is not None and not exchange_account_check(account=account)


@shared_task
def key_hygiene_task() -> int:
    """Daily: re-check every key; returns how many accounts have problems."""
    return sum(1 for problems in exchange_accounts_hygiene().values() if problems)
