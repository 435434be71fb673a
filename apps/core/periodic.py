"""A background pass repeated every few seconds in a long-running process (the control worker's pollers)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import close_old_connections

logger = logging.getLogger(__name__)


def run_every(
    stop: threading.Event,
    every_s: float,
    fn: Callable[[], object],
    what: str,
    *,
    wait: Callable[[float], object] | None = None,
) -> None:
    """Call fn every every_s seconds until stop is set; a failing pass never ends the loop.

    Each pass gets a fresh database connection if the old one broke. One traceback per outage,
    not one per pass; the recovery is logged too. `wait(every_s)` may end a wait early (a notification);
    by default it is stop.wait. The loop ends once stop is set.
    """
    failing = False
    pause = wait or stop.wait
    while True:
        pause(every_s)
        if stop.is_set():
            return
        try:
            close_old_connections()
            fn()
            if failing:
                logger.warning("%s: working again", what)
            failing = False
        except Exception:  # the database (or whatever failed) may be back next time
            if not failing:
                logger.exception("%s: a pass failed", what)
            failing = True
        finally:
            close_old_connections()
