"""Circuit breakers' rules: their defaults, their business ranges, and admins' changes to them (audited)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from apps.accounts.models import User
from apps.audit.services import record
from apps.core.exceptions import ApplicationError
from apps.killswitch.models import BreakerRule

logger = logging.getLogger(__name__)

ACTOR = "system:breakers"
Kind = BreakerRule.Kind
Action = BreakerRule.Action


def number_text(value: Decimal) -> str:
    return f"{value.normalize():f}"


@dataclass(frozen=True)
class Default:
    action: str
    threshold: Decimal | None
    window_s: int
    # What the threshold means, shown on the breakers page; None: the kind has no threshold.
    threshold_help: str | None
    window_help: str | None = None
    # The business range of the threshold (both ends included) and whether it counts whole events.
    threshold_range: tuple[Decimal, Decimal] = (Decimal(0), Decimal(0))
    whole: bool = True


_COUNT = (Decimal(1), Decimal(100_000))
DEFAULTS: dict[str, Default] = {
    Kind.BOT_DAILY_LOSS: Default(Action.HALT_BOT, None, 0, None),
    Kind.BOT_DRAWDOWN: Default(Action.HALT_BOT, None, 0, None),
    Kind.FLEET_DAILY_LOSS: Default(
        Action.KILL_ALL,
        Decimal("1000"),
        0,
        "Loss since the start of the UTC day, summed over the live bots' own ledgers (quote)",
        threshold_range=(Decimal("0.01"), Decimal(1_000_000_000)),
        whole=False,
    ),
    Kind.FLEET_DRAWDOWN: Default(
        Action.KILL_ALL,
        Decimal("20"),
        0,
        "Percent below the summed peak equity of the live bots' own ledgers",
        threshold_range=(Decimal("0.01"), Decimal(100)),
        whole=False,
    ),
    Kind.ORDER_RATE: Default(
        Action.HALT_BOT,
        # A runaway guard, above what a normal restart places: five grid bots of 20 levels each
        # re-place 100 orders at once after a kill. Each bot's own rate is its max orders per minute.
        Decimal("600"),
        60,
        "Live orders placed by all bots within the window",
        "Window (seconds)",
        threshold_range=_COUNT,
    ),
    Kind.FOREIGN_ORDERS: Default(
        Action.HALT_BOT,
        Decimal("1"),
        3600,
        "Foreign orders found on one account within the window",
        "Window (seconds)",
        threshold_range=_COUNT,
    ),
    Kind.AUTH_ERRORS: Default(
        Action.HALT_BOT,
        Decimal("3"),
        300,
        "Key rejections by the exchange for one account within the window",
        "Window (seconds)",
        threshold_range=_COUNT,
    ),
    Kind.VAULT_UNREACHABLE: Default(
        Action.ALERT,
        Decimal("3"),
        0,
        "Consecutive failed Vault health checks",
        threshold_range=(Decimal(1), Decimal(1000)),
    ),
}
WINDOW_MAX_S = 7 * 86400
THRESHOLD_DECIMALS = 8  # BreakerRule.threshold
INPUT_MAX = 40  # characters of a typed number: far more than any number in range needs


@dataclass
# -- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleView:
    rule: BreakerRule
    label: str
    threshold_help: str | None
    window_help: str | None


def rules_for_page() -> list[RuleView]:
    rules = rules_current()
    return [
        RuleView(rules[kind], Kind(kind).label, default.threshold_help, default.window_help)
        for kind, default in DEFAULTS.items()
    ]


def rules_current() -> dict[str, BreakerRule]:
    """Every breaker's rule, creating the missing ones with their defaults."""
    rules = {rule.kind: rule for rule in BreakerRule.objects.all()}
    for kind, default in DEFAULTS.items():
        if kind not in rules:
            rules[kind], _ = BreakerRule.objects.get_or_create(
                kind=kind,
                defaults={"action": default.action, "threshold": default.threshold, "window_s": default.window_s},
            )
    return rules


def breaker_rule_update(
    *,
    actor: User,
    kind: str,
    enabled: bool,
    action: str,
    threshold: Decimal | None,
    window_s: int | None,
    request: Any = None,
) -> BreakerRule:
    """Change one breaker's rule (admins, behind step-up in the view); audited with before and after."""
    if kind not in DEFAULTS:
        raise ApplicationError(f"Unknown circuit breaker {kind[:50]!r}.")
    if action not in Action.values:
        raise ApplicationError(f"Unknown action {action[:50]!r}.")
    default = DEFAULTS[kind]
    threshold = _threshold_checked(kind, default, threshold) if default.threshold_help is not None else None
    if default.window_help is not None:
        if window_s is None or window_s < 1 or window_s > WINDOW_MAX_S:
            raise ApplicationError(f"The window must be between 1 and {WINDOW_MAX_S} seconds (7 days).")
    else:
        window_s = default.window_s
    rule = rules_current()[kind]
    before = _rule_data(rule)
    rule.enabled, rule.action, rule.threshold, rule.window_s = enabled, action, threshold, window_s
    after = _rule_data(rule)
    if before == after:
        return rule
    with transaction.atomic():
        rule.save()
        record(
            actor=actor,
            action="breaker.rule_changed",
            target=rule,
            request=request,
            data={"kind": kind, "before": before, "after": after},
        )
    return rule


def _threshold_checked(kind: str, default: Default, threshold: Decimal | None) -> Decimal:
    low, high = default.threshold_range
    what = f"The threshold of {Kind(kind).label.lower()}"
    unit = "a whole number" if default.whole else "a number"
    if threshold is None or not threshold.is_finite():
        raise ApplicationError(f"{what} must be {unit} between {number_text(low)} and {number_text(high)}.")
    if not low <= threshold <= high:
        raise ApplicationError(
            f"{what} must be between {number_text(low)} and {number_text(high)}; nothing was changed."
        )
    if default.whole and threshold != threshold.to_integral_value():
        raise ApplicationError(
            f"{what} counts events: give a whole number between {number_text(low)} and {number_text(high)}."
        )
    if -threshold.normalize().as_tuple().exponent > THRESHOLD_DECIMALS:  # type: ignore[operator]
        raise ApplicationError(f"{what} takes at most {THRESHOLD_DECIMALS} decimal places.")
    return threshold


def _typed(raw: str | None, what: str) -> str:
    """A typed number as text: stripped, short, plain characters only (the field is shown back in messages)."""
    text = (raw or "").strip()
    if len(text) > INPUT_MAX:
        raise ApplicationError(f"The {what} is too long to be a number in range ({len(text)} characters).")
    if not text.isascii() or not text.isprintable():
        raise ApplicationError(f"The {what} must be typed with plain digits (no control or special characters).")
    return text


def breaker_rule_update_from_input(
    *, actor: User, kind: str, data: Mapping[str, str], request: Any = None
) -> BreakerRule:
    """The same, from a submitted form: text fields parsed here, every error a clear message."""
    raw_threshold = _typed(data.get("threshold"), "threshold")
    raw_window = _typed(data.get("window_s"), "window")
    raw_action = (data.get("action") or "").strip()
    if raw_action not in Action.values:
        choices = ", ".join(str(label).lower() for label in Action.labels)
        raise ApplicationError(f"Choose what the breaker does: {choices}.")
    try:
        threshold = Decimal(raw_threshold) if raw_threshold else None
    except InvalidOperation:
        raise ApplicationError(f"The threshold {raw_threshold!r} is not a number.") from None
    if not raw_window:
        window_s = None
    elif raw_window.isdigit():
        window_s = int(raw_window)
    else:
        raise ApplicationError(f"The window {raw_window!r} is not a whole number of seconds.")
    return breaker_rule_update(
        actor=actor,
        kind=kind,
        enabled=data.get("enabled") == "on",
        action=raw_action,
        threshold=threshold,
        window_s=window_s,
        request=request,
    )


def _rule_data(rule: BreakerRule) -> dict[str, Any]:
    return {
        "enabled": rule.enabled,
        "action": rule.action,
        "threshold": None if rule.threshold is None else number_text(rule.threshold),
        "window_s": rule.window_s,
    }
