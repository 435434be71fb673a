"""Control-worker tasks (no argument but the snapshot's source, never a secret), and asking for one."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction
from django.http import HttpRequest

from apps.accounts.models import User
from apps.audit.services import record
from apps.core.queueing import enqueue_or_refuse
from apps.reviews.models import BalanceSnapshot
from apps.reviews.periods import Period
from apps.reviews.services import balance_snapshots_take, review_target


@shared_task
def balance_snapshot_task(source: str = "schedule") -> int:
    """Snapshot every exchange account's balances; returns how many the exchanges answered."""
    return sum(1 for snapshot in balance_snapshots_take(source=source) if snapshot.ok)


def balance_check_request(*, actor: User, period: Period, request: HttpRequest | None = None) -> None:
    """An operator asks for snapshots now: audited and queued for the control worker, or neither (and the
    caller is told how to take them from the shell instead)."""
    with transaction.atomic():
        record(actor=actor, action="review.balance_check_requested", target=review_target(period), request=request)
        enqueue_or_refuse(
            balance_snapshot_task,
            shell_hint="manage.py review_balances",
            kwargs={"source": BalanceSnapshot.Source.REQUEST},
        )
