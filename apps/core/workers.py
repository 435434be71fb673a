"""What a Celery worker process is: the control worker consumes the "control" queue; a bot worker its own."""

from __future__ import annotations

from typing import Any

CONTROL_QUEUE = "control"


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
