"""Template side of apps.core.display and apps.core.words: `{% load display %}`.

{{ value|moment }}                <time datetime="…">2026-12-04 20:01:32 UTC <span class="ago">(12 s ago)</span></time>
{{ value|moment:"never" }}        the same, or "never" when there is no time
{% amount o.amount o.symbol %}    at the market's amount decimals (the view's `market_decimals`), else plain
{% price o.price o.symbol %}      at the market's price decimals, else plain
{{ value|num }}                   grouped, no trailing zeros
{{ value|money:"USDT" }}          "1,234.56 USDT"
{{ value|pnl:"USDT" }}            signed, coloured and worded: "+12.30 USDT (gain)"
{{ bot|bot_state }}               "Running", "Halted by circuit breaker" …
{{ code|event_kind }} {{ code|alert_kind }} {{ code|kill_step }} {{ code|audit_action }} {{ code|order_status }}
{% display_words %}               the words as JSON for static/js/format.js (live rows)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from django import template
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString

from apps.core import display, words

register = template.Library()


@register.filter(is_safe=True)
def moment(value: object, empty: str = "—") -> SafeString | str:
    """A <time> with the absolute UTC text and how long ago (static/js/format.js keeps that part current)."""
    if isinstance(value, str) and value:
        try:  # an ISO time, as a review's JSON keeps them
            parsed: object = datetime.fromisoformat(value)
        except ValueError:
            return value
        value = parsed
    if not isinstance(value, datetime):
        if isinstance(value, date):  # a day has no time: just the day
            return value.isoformat()
        return empty
    return format_html(
        '<time datetime="{}"><span class="at">{}</span> <span class="ago">({})</span></time>',
        display.moment_iso(value),
        display.moment_text(value),
        display.ago_text(value),
    )


def _places(context: Mapping[str, Any], symbol: object, which: int) -> int | None:
    decimals = context.get("market_decimals") or {}
    found = decimals.get(str(symbol)) if isinstance(decimals, Mapping) else None
    return found[which] if found else None


@register.simple_tag(takes_context=True)
def amount(context: Mapping[str, Any], value: object, symbol: object = "") -> str:
    """A quantity at the market's amount decimals when the page knows them."""
    return display.number_text(value, _places(context, symbol, 0))


@register.simple_tag(takes_context=True)
def price(context: Mapping[str, Any], value: object, symbol: object = "") -> str:
    """A price at the market's price decimals when the page knows them."""
    return display.number_text(value, _places(context, symbol, 1))


@register.filter
def num(value: object) -> str:
    return display.number_text(value)


def _currency(unit: object) -> str:
    """A currency, or a symbol's quote currency ("BTC/USDT" and "BTC/USDT:USDT" → "USDT")."""
    text = str(unit or "")
    return text.partition("/")[2].split(":", 1)[0] if "/" in text else text


@register.filter
def money(value: object, currency: str = "") -> str:
    """Money with its currency; `currency` may be a symbol, whose quote currency it is."""
    return display.money_text(value, _currency(currency))


@register.filter(is_safe=True)
def pnl(value: object, currency: str = "") -> SafeString | str:
    """A gain or loss: signed, coloured by its class, and saying "gain" or "loss" in words."""
    text, tone = display.pnl_parts(value, _currency(currency))
    if not tone:
        return text
    if tone == "even":
        return format_html('<span class="pnl even">{}</span>', text)
    return format_html('<span class="pnl {}">{} <span class="pnl-word">({})</span></span>', tone, text, tone)


@register.filter
def bot_state(bot: Any) -> str:
    """A bot's (or a bot_state event's data's) state in words."""

    def field(name: str) -> Any:
        return bot.get(name) if isinstance(bot, Mapping) else getattr(bot, name, None)

    return words.bot_state(
        str(field("observed_state") or ""),
        str(field("desired_state") or ""),
        halted=bool(field("halted")),
        halt_kind=str(field("halt_kind") or ""),
    )


@register.filter
def as_json(value: object) -> str:
    """`value` as JSON, for a data attribute (the template escapes it there)."""
    return json.dumps(value, separators=(",", ":"), default=str)


@register.filter
def event_kind(code: object) -> str:
    return words.word(words.EVENT_KINDS, code)


@register.filter
def alert_kind(code: object) -> str:
    return words.alert_kind(str(code or ""))


@register.filter
def kill_step(code: object) -> str:
    return words.word(words.KILL_STEPS, code)


@register.filter
def audit_action(code: object) -> str:
    return words.audit_action(str(code or ""))


@register.filter
def order_status(code: object) -> str:
    return words.word(words.ORDER_STATUSES, code)


@register.simple_tag
def display_words() -> SafeString:
    return json_script(words.for_js(), "display-words")
