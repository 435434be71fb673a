"""Control-worker tasks (only ids travel in messages, never a secret), and asking for a check."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction
from django.http import HttpRequest

from apps.accounts.models import User
from apps.audit.services import record
from apps.core.queueing import enqueue_or_refuse
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


def exchange_account_check_request(
    *, account: ExchangeAccount, actor: User, request: HttpRequest | None = None
) -> None:
    """An admin asks for a check now: audited and queued, or neither. The web process cannot read the secret;
    the control worker checks it. Only the id travels."""
    with transaction.atomic():
        record(actor=actor, action="exchange_account.check_requested", target=account, request=request)
        enqueue_or_refuse(
            exchange_account_check_task,
            shell_hint="manage.py shell -c 'from apps.exchanges.services import exchange_accounts_hygiene; "
            "exchange_accounts_hygiene()'",
            args=(str(account.id),),
        )
