"""Asking the control worker for work: queue a task, or refuse with a message that says what to do instead."""

from __future__ import annotations

import logging
from typing import Any

from apps.core.exceptions import ApplicationError

logger = logging.getLogger(__name__)


def enqueue_or_refuse(task: Any, *, shell_hint: str, **options: Any) -> None:
    """Queue `task` (a Celery task; `options` as for apply_async) without Celery's own retries.

    With the broker unreachable this raises ApplicationError naming `shell_hint`, the command that does
    the same from a shell; inside a transaction, the caller's audit entry then rolls back with it.
    """
    try:
        task.apply_async(retry=False, **options)
    except Exception as exc:
        logger.warning("%s not queued (%s)", getattr(task, "name", task), type(exc).__name__)
        raise ApplicationError(
            f"The control worker could not be reached (is the broker running?). Run `{shell_hint}` on the server "
            "instead."
        ) from exc
