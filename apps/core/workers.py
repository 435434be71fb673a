"""What a Celery worker process is: the control worker consumes the "control" queue; a bot worker its own.
Every worker runs BrokerLossConsumer, which reconnects after losing the broker."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_postrun, task_prerun
from celery.worker.consumer import Consumer
from django.db import close_old_connections

logger = logging.getLogger(__name__)

CONTROL_QUEUE = "control"


@task_prerun.connect
@task_postrun.connect
def _database_as_for_a_request(sender: Any = None, **_: Any) -> None:
    """Around each task, what Django does around a request: a connection that broke, outlived CONN_MAX_AGE or was
    left inside a transaction is closed, any other is kept (and health-checked before its next use). Celery's own
    fixup would close it every time (see CELERY_DB_REUSE_MAX): a bot worker opened a new PostgreSQL session at
    every tick. A task run eagerly (`apply()`, in the caller's process) is left alone, as celery's fixup leaves it:
    its connection is the caller's, possibly inside the caller's transaction."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    close_old_connections()


def consumes_control_queue(sender: Any) -> bool:
    """Whether the Celery worker `sender` (a WorkController or its consumer) consumes the control queue."""
    consumer = getattr(sender, "consumer", sender)
    task_consumer = getattr(consumer, "task_consumer", None)
    queues = getattr(task_consumer, "queues", None) or []
    names = {getattr(q, "name", "") for q in queues}
    if not names:
        app = getattr(sender, "app", None)
        select = getattr(getattr(app, "amqp", None), "queues", None)
        names = set(getattr(select, "consume_from", {}) or {}) if select is not None else set()
    return CONTROL_QUEUE in names


class BrokerLossConsumer(Consumer):
    """Celery's consumer (CELERY_WORKER_CONSUMER), surviving its own clean-up after losing the broker.

    With celery 5.7 and kombu 5.7 on Redis, a worker that loses its broker connection while it holds an
    unacknowledged message (a bot worker always does: its next tick waits in it until its countdown ends)
    first collects the connection, which clears the transport's client, then closes it; closing the channel
    requeues the unacknowledged messages and asks the cleared client for the broker's address: AttributeError,
    which celery does not expect there and treats as unrecoverable, so the worker exits instead of
    reconnecting. Here that clean-up error is logged and the consumer reconnects as it would have. The
    messages stay in Redis's unacknowledged set (kombu restores them after its visibility timeout); a bot
    worker's tick keeper (apps.trading.tasks) replaces the tick meanwhile.
    """

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as cleanup:
            logger.warning("broker connection lost; its clean-up failed (%r), reconnecting anyway", cleanup)
