"""A background pass repeated every few seconds in a long-running process (the control worker's pollers)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import close_old_connections

logger = logging.getLogger(__name__)


def run_every(stop: threading.Event, every_s: float, fn: Callable[[], object], what: str) -> None:
    """Call fn every every_s seconds until stop is set; a failing pass never ends the loop.

    Each pass gets a fresh database connection if the old one broke. One traceback per outage,
    not one per pass; the recovery is logged too.
    """
    failing = False
    while not stop.wait(every_s):
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
