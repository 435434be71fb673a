"""Control-worker tasks: periodic and on-demand checkpoints, periodic full verification."""

import logging

from celery import shared_task

from apps.audit.checkpoints import audit_checkpoint_create, audit_verify
from apps.vault.client import VaultError

logger = logging.getLogger(__name__)
SOURCE = "system:control-worker"


@shared_task
def audit_verify_task() -> bool:
    """Verify the whole log (chain, checkpoints, the file); a break raises a critical alert."""
    try:
        return audit_verify(source=SOURCE).ok
    except VaultError as exc:
        logger.error("audit verification could not complete: %s", exc)
        return False


@shared_task
def audit_checkpoint_task() -> int | None:
    """Sign a checkpoint of the last entry; returns its seq (None when refused or nothing was new)."""
    try:
        result = audit_checkpoint_create(source=SOURCE)
    except VaultError as exc:
        logger.error("audit checkpoint not signed: %s", exc)
        return None
    return result.checkpoint.seq if result.checkpoint else None
