"""Control-worker tasks: no argument but the snapshot's source, never a secret."""

from celery import shared_task

from apps.reviews.services import balance_snapshots_take


@shared_task
def balance_snapshot_task(source: str = "schedule") -> int:
    """Snapshot every exchange account's balances; returns how many the exchanges answered."""
    return sum(1 for snapshot in balance_snapshots_take(source=source) if snapshot.ok)
