"""What a kill run tells: its live events, its report summary, and the audit entry and alert at its end."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from apps.alerts.models import Alert
from apps.alerts.services import alert_raise
from apps.audit.models import AuditEntry
from apps.audit.services import record
from apps.core.display import number_text, to_decimal
from apps.core.words import KILL_STEPS, word
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


def _pressed_by(run: KillRun) -> dict[str, Any] | None:
    # The control worker finishes the run on the presser's behalf: name them as their press was recorded
    # (who, verified or not, from where), so the finished entry never reads as an unverified actor's.
    entry = (
        AuditEntry.objects.filter(action="killswitch.pressed", target_type="killswitch.killrun", target_id=str(run.pk))
        .order_by("seq")
        .values("seq", "actor", "otp_verified", "ip")
        .first()
    )
    return dict(entry) if entry else None


def report_summary(run: KillRun) -> dict[str, Any]:
    return {
        "run": run.pk,
        "requested_via": run.requested_via,
        "scope": run.scope,
        "bot": run.bot_id,
        "status": run.status,
        "reason": run.reason,
        "duration_ms": run.duration_ms,
        "workers_stopped_ms": run.workers_stopped_ms,
        "workers_stopped": run.workers_stopped,
        "orders_cancelled": run.orders_cancelled,
        "paper_orders_cancelled": run.paper_orders_cancelled,
        "orders_still_open": run.orders_still_open,
        "open_unknown": run.open_unknown,
        "problems": run.problems,
        "steps": [{"name": s["name"], "ms": s["ms"], "at_ms": s.get("at_ms")} for s in run.steps],
    }


def result_line(run: KillRun) -> str:
    """The run's outcome in one line, as the live feed shows it: "done in 3.1 s — 8 orders cancelled, 0 open, …"."""
    if run.status in (KillRun.Status.PENDING, KillRun.Status.RUNNING):
        return "running"
    outcome = "done" if run.status == KillRun.Status.DONE else "failed"
    seconds = f" in {run.duration_ms / 1000:.1f} s" if run.duration_ms is not None else ""
    paper = f" ({run.paper_orders_cancelled} paper)" if run.paper_orders_cancelled else ""
    if run.open_unknown:
        still_open = "open orders unknown"
    elif run.orders_still_open:
        still_open = f"{run.orders_still_open} still open"
    else:
        still_open = "0 open"
    return (
        f"{outcome}{seconds} — {run.orders_cancelled} order{'s' if run.orders_cancelled != 1 else ''} "
        f"cancelled{paper}, {still_open}, {run.workers_stopped} worker{'s' if run.workers_stopped != 1 else ''} stopped"
    )


def run_state(run: KillRun) -> dict[str, Any]:
    """Everything the report page shows, for its live updates (the page's own figures, nothing secret)."""
    return {
        **report_summary(run),
        "status_label": run.get_status_display(),
        "takeovers": run.takeover_lines,
        "finished": run.finished_at is not None,
        "still_open_text": run.still_open_text,
        "result": result_line(run),
        "steps": [
            {
                "name": s["name"],
                "label": word(KILL_STEPS, s["name"]),
                "ms": s["ms"],
                "at_ms": s.get("at_ms"),
                "detail": s.get("detail", ""),
            }
            for s in run.steps
        ],
        "balances": balances_table(run),
    }


def balances_table(run: KillRun) -> list[dict[str, Any]]:
    """The balances each account held after the kill, by account and asset, written for people.

    Each account: its label, whether it answered, and a row per asset held with its free, used (held by an
    order) and total amounts. Runs from before the free amounts were kept show the total alone.
    """
    accounts = []
    for info in sorted(run.balances_after.values(), key=lambda info: str(info.get("label", ""))):
        totals: dict[str, Any] = info.get("total") or {}
        free: dict[str, Any] = info.get("free") or {}
        rows = []
        for asset, total in sorted(totals.items()):
            held, spare = to_decimal(total), to_decimal(free.get(asset))
            used = held - spare if held is not None and spare is not None else None
            rows.append(
                {
                    "asset": asset,
                    "free": number_text(spare) if spare is not None else "",
                    "used": number_text(max(used, Decimal(0))) if used is not None else "",
                    "total": number_text(total),
                }
            )
        label = str(info.get("label") or "(account without a name)")
        accounts.append({"account": label, "reached": info.get("reached", True), "assets": rows})
    return accounts


def _message(run: KillRun, n_bots: int, n_accounts: int) -> str:
    scope = f"bot #{run.bot_id}" if run.scope == KillRun.Scope.BOT else "all bots"
    message = (
        f"Kill switch ({scope}) {'finished' if run.status == KillRun.Status.DONE else 'finished WITH PROBLEMS'} "
        f"in {run.duration_ms} ms (click to verified): {run.orders_cancelled} order(s) cancelled "
        f"({run.paper_orders_cancelled} paper), {run.still_open_text} still open, "
        f"{n_bots} bot(s) stopped, {n_accounts} account(s). Reason: {run.reason}"
    )
    if run.takeovers:
        message += "\n" + "\n".join(run.takeover_lines)
    if run.problems:
        message += "\nProblems:\n" + "\n".join(f"- {p}" for p in run.problems)
    return message


def run_finish(run: KillRun, n_bots: int, n_accounts: int) -> None:
    """The run is over: audit it, announce it, alert (each best effort: the report is already stored)."""
    summary = report_summary(run)
    try:
        pressed = _pressed_by(run)  # in the audit log only: the report page does not show addresses
        record(actor=ACTOR, action="killswitch.finished", target=run, data={**summary, "pressed_by": pressed})
    except Exception:
        logger.exception("kill run %s: audit entry not written", run.pk)
    line = result_line(run)
    # detail: what the dashboard's feed prints after "Kill switch finished:"; message: the whole sentence.
    run_publish(run, "finished", report=summary, detail=line, message=f"Kill switch {line}")
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
