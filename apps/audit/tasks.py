import logging

from celery import shared_task

from apps.audit.services import audit_verify_chain, record

logger = logging.getLogger(__name__)


@shared_task
def audit_verify_task() -> bool:
    """Periodic chain verification on the control worker; a break is itself audited."""
    report = audit_verify_chain()
    if not report.ok:
        logger.error("audit chain broken at #%s: %s", report.broken_seq, report.reason)
        record(
            actor="system:control-worker",
            action="audit.chain_broken",
            data={"broken_seq": report.broken_seq, "reason": report.reason},
        )
    return report.ok
