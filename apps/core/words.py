"""Plain words for the codes the console stores: bot states, event and alert kinds, kill steps, audit actions.

The codes stay what they are in the database, the audit log and the exports; pages show these words (the
audit log shows the code beside its word, since people filter by it). Live rows get the same words: the
page carries `for_js()` as JSON (the `display_words` tag) and static/js/format.js reads it.
"""

from __future__ import annotations

from typing import Any

OBSERVED_STATES = {
    "stopped": "Stopped",
    "starting": "Starting",
    "running": "Running",
    "stopping": "Stopping",
    "halted": "Halted",
    "error": "Error",
}
HALTED_BY = {
    "breaker": "Halted by circuit breaker",
    "gate": "Halted by the order gate",
    "emergency": "Halted by emergency stop",
    "kill": "Halted by the kill switch",
}

ORDER_STATUSES = {
    "new": "New",
    "open": "Open",
    "partially_filled": "Partly filled",
    "filled": "Filled",
    "canceled": "Cancelled",
    "rejected": "Rejected",
    "expired": "Expired",
}
SIDES = {"buy": "Buy", "sell": "Sell"}

EVENT_KINDS = {
    "order_new": "New order",
    "order_update": "Order update",
    "fill": "Fill",
    "bot_state": "Bot state",
    "heartbeat": "Heartbeat",
    "gate_refusal": "Refused by the order gate",
    "pnl": "Profit and loss",
    "alert": "Alert",
    "kill_switch": "Kill switch",
    "bot_log": "Log lines",
}

ALERT_KINDS = {
    "kill_switch": "Kill switch",
    "circuit_breaker": "Circuit breaker",
    "foreign_order": "Order the console did not place",
    "key_check_failed": "Exchange key check failed",
    "login_locked_out": "Sign-in locked out",
    "balance_mismatch": "Balances do not add up",
    "deadman_failing": "Dead-man's switch failing",
    "audit_tampered": "Audit log tampered with",
    "webhook_test": "Test alert",
}

KILL_STEPS = {
    "revoke": "Revoke bot credentials",
    "stop": "Stop bot workers",
    "purge": "Empty bot queues",
    "paper": "Cancel paper orders",
    "cancel": "Cancel orders on the exchanges",
    "verify": "Check that no order is left open",
    "flatten": "Sell positions (flatten)",
    "balances": "Read balances",
}
KILL_STAGES = {"started": "started", "progress": "step done", "finished": "finished"}

AUDIT_ACTIONS = {
    "alert.acknowledged": "Alert acknowledged",
    "alert_webhook.configured": "Alert webhook configured",
    "alert_webhook.disabled": "Alert webhook disabled",
    "alert_webhook.test_requested": "Test alert requested",
    "audit.checkpoint_requested": "Signed checkpoint requested",
    "audit.exported": "Audit log exported",
    "auth.step_up": "Fresh code given",
    "auth.step_up_failed": "Fresh code refused",
    "backup.create": "Backup made",
    "backup.restore": "Backup restored",
    "bot.archived": "Bot archived",
    "bot.cloned": "Bot cloned",
    "bot.created": "Bot created",
    "bot.flatten_on_kill_changed": "Bot's sell-on-kill setting changed",
    "bot.halt_cleared": "Bot's halt cleared",
    "bot.halted": "Bot halted",
    "bot.mode_changed": "Bot switched between paper and live",
    "bot.start_requested": "Bot start asked for",
    "bot.stop_requested": "Bot stop asked for",
    "bot.unarchived": "Bot unarchived",
    "bot.updated": "Bot settings changed",
    "bot.worker_crashed": "Bot worker crashed",
    "bot.worker_restarted": "Bot worker restarted",
    "bot.worker_stopped": "Bot worker stopped",
    "bot.worker_orphan_stopped": "Leftover bot worker stopped",
    "bot.orphan_identity_revoked": "Leftover bot worker's credentials revoked",
    "breaker.cleared": "Circuit breaker cleared",
    "breaker.rule_changed": "Circuit breaker changed",
    "database.runtime_grants": "Database permissions set",
    "exchange_account.check_requested": "Exchange key check asked for",
    "exchange_account.checked": "Exchange key checked",
    "exchange_account.created": "Exchange account added",
    "exchange_account.deleted": "Exchange account deleted",
    "exchange_account.rotated": "Exchange key replaced",
    "gate.refused": "Order refused by the gate",
    "order.recovered": "Order recovered after a lost write",
    "killswitch.abandoned": "Kill run abandoned",
    "killswitch.finished": "Kill run finished",
    "killswitch.flatten_sold": "Position sold by the kill switch",
    "killswitch.pressed": "Kill switch pressed",
    "killswitch.resumed_after_crash": "Kill run taken over after its executor died",
    "killswitch.resumed": "Trading resumed after a kill",
    "login.failed": "Sign-in failed (password)",
    "login.locked_out": "Sign-in locked out",
    "login.otp_failed": "Sign-in failed (code)",
    "login.password_ok": "Password accepted",
    "login.success": "Signed in",
    "order.canceled": "Order cancelled",
    "order.placed": "Order placed",
    "otp.backup_code_used": "Backup code used",
    "otp.backup_codes_generated": "New backup codes made",
    "otp.enrolled": "Authenticator set up",
    "reconcile.foreign_order": "Order the console did not place found",
    "review.balance_check_requested": "Balance check asked for",
    "review.balance_snapshot": "Balances recorded",
    "review.exported": "Review exported",
    "review.signed_off": "Review signed off",
    "session.ended": "Session ended",
    "trades.exported": "Trades exported",
    "trading.halted": "Trading halted",
    "trading.resumed": "Trading resumed",
    "user.activated": "User activated or deactivated",
    "user.created": "User created",
    "user.otp_reset": "User's authenticator reset",
    "user.password_changed": "Password changed",
    "user.role_changed": "User's role changed",
    "user.unlocked": "User unlocked",
}


def counted(count: int, noun: str, plural: str = "") -> str:
    """ "1 bot token", "2 bot tokens": a count with its noun, never "token(s)"."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def humanized(code: str) -> str:
    """A code nobody has worded yet, made readable: "key_check_failed" → "Key check failed"."""
    text = code.replace("_", " ").replace(".", ": ").strip()
    return text[:1].upper() + text[1:]


def bot_state(observed: str, desired: str = "", *, halted: bool = False, halt_kind: str = "") -> str:
    """A bot's state in one phrase: "Running", "Starting", "Halted by circuit breaker" …"""
    if halted:
        return HALTED_BY.get(halt_kind, "Halted")
    if observed == "error":
        return "Error, restarting" if desired == "running" else "Error"
    if desired == "running" and observed == "stopped":
        return "Starting"
    if desired == "stopped" and observed in ("running", "starting"):
        return "Stopping"
    return OBSERVED_STATES.get(observed, humanized(observed))


def word(table: dict[str, str], code: object) -> str:
    """The word for `code` in `table`, or the code made readable."""
    text = "" if code is None else str(code)
    return table.get(text) or humanized(text)


def alert_kind(code: str) -> str:
    return word(ALERT_KINDS, code)


def audit_action(code: str) -> str:
    """ "Bot created" for "bot.created"; an alert's entry ("alert.<kind>") as "Alert raised: <kind's word>"."""
    if code in AUDIT_ACTIONS:
        return AUDIT_ACTIONS[code]
    if code.startswith("alert."):
        return f"Alert raised: {alert_kind(code.removeprefix('alert.')).lower()}"
    return humanized(code)


def for_js() -> dict[str, Any]:
    """The words a live page needs for rows it adds (static/js/format.js)."""
    return {
        "observed": OBSERVED_STATES,
        "haltedBy": HALTED_BY,
        "orderStatus": ORDER_STATUSES,
        "side": SIDES,
        "eventKind": EVENT_KINDS,
        "alertKind": ALERT_KINDS,
        "killStep": KILL_STEPS,
    }
