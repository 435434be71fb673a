"""What a kill run tells: its live events, its report summary, and the audit entry and alert at its end."""

from __future__ import annotations

import logging
from typing import Any

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.services import record
from apps.events.services import publish
from apps.killswitch.models import KillRun

logger = logging.getLogger(__name__)
ACTOR = "system:killswitch"


def run_publish(run: KillRun, stage: str, **data: Any) -> None:
    """A live event of the run (started, progress, finished); the feed is a courtesy, never a kill's failure."""
    try:
        publish(kind="kill_switch", data={"run": run.pk, "stage": stage, **data})
    except Exception:
        logger.warning("kill run %s: live event %s not stored", run.pk, stage, exc_info=True)


def report_summary(run: KillRun) -> dict[str, Any]:
    return {
        "run": run.pk,
        "scope": run.scope,
        "bot": run.bot_id,
        "status": run.status,
        "reason": run.reason,
        "duration_ms": run.duration_ms,
        "orders_cancelled": run.orders_cancelled,
        "orders_still_open": run.orders_still_open,
        "open_unknown": run.open_unknown,
        "problems": run.problems,
        "steps": [{"name": s["name"], "ms": s["ms"], "at_ms": s.get("at_ms")} for s in run.steps],
    }


def _message(run: KillRun, n_bots: int, n_accounts: int) -> str:
    scope = f"bot #{run.bot_id}" if run.scope == KillRun.Scope.BOT else "all bots"
    message = (
        f"Kill switch ({scope}) {'finished' if run.status == KillRun.Status.DONE else 'finished WITH PROBLEMS'} "
        f"in {run.duration_ms} ms: {run.orders_cancelled} order(s) cancelled, {run.still_open_text} still open, "
        f"{n_bots} bot(s) stopped, {n_accounts} account(s). Reason: {run.reason}"
    )
    if run.problems:
        message += "\nProblems:\n" + "\n".join(f"- {p}" for p in run.problems)
    return message


def run_finish(run: KillRun, n_bots: int, n_accounts: int) -> None:
    """The run is over: audit it, announce it, alert (each best effort: the report is already stored)."""
    summary = report_summary(run)
    try:
        record(actor=ACTOR, action="killswitch.finished", target=run, data=summary)
    except Exception:
        logger.exception("kill run %s: audit entry not written", run.pk)
    run_publish(run, "finished", report=summary)
    try:
        alert_raise(
            kind="kill_switch",
            severity=Alert.Severity.CRITICAL,
            message=_message(run, n_bots, n_accounts),
            target=run,
            data=summary,
            source=ACTOR,
        )
    except Exception:
        logger.exception("kill run %s: alert not raised", run.pk)
