"""Control-worker tasks: periodic and on-demand checkpoints, periodic full verification; asking for a checkpoint."""

from __future__ import annotations

import logging

from celery import shared_task
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest

from apps.audit.checkpoints import CheckpointFileError, audit_checkpoint_create, audit_verify
from apps.audit.services import record
from apps.core.queueing import enqueue_or_refuse
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
    except CheckpointFileError:
        return None  # recorded, logged and alerted; the next one covers these entries
    return result.checkpoint.seq if result.checkpoint else None


def audit_checkpoint_request(*, actor: AbstractBaseUser, request: HttpRequest | None = None) -> None:
    """An admin asks for a checkpoint now: audited and queued for the control worker, or neither.

    The entry commits before the control worker can take the task, so the checkpoint covers the request too.
    """
    with transaction.atomic():
        record(actor=actor, action="audit.checkpoint_requested", request=request)
        enqueue_or_refuse(audit_checkpoint_task, shell_hint="manage.py audit_checkpoint")
