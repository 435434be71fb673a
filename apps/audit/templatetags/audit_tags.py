import json
from typing import Any

from django import template
from django.urls import NoReverseMatch, reverse

register = template.Library()


@register.filter
def compact_json(value: Any) -> str:
    """Entry data on one line, for the list (the detail page shows it in full)."""
    if value in ({}, None):
        return ""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


# Where an entry's target lives in the console: (url name, whether the id is an integer); others get no link.
_TARGET_PAGES = {
    "bots.bot": ("bots:detail", "bot_id"),
    "killswitch.killrun": ("killswitch:run", "run_id"),
    "accounts.user": ("accounts:user_detail", "user_id"),
    "exchanges.exchangeaccount": ("exchanges:list", None),
    "alerts.alert": ("alerts:list", None),
    "reviews.reviewsignoff": ("reviews:list", None),
}


@register.filter
def target_url(entry: Any) -> str:
    """The page of an audit entry's target, or "" when it has none (or its id is not one a page takes)."""
    page = _TARGET_PAGES.get(getattr(entry, "target_type", ""))
    if page is None:
        return ""
    name, kwarg = page
    try:
        if kwarg is None:
            return reverse(name)
        ident = int(str(getattr(entry, "target_id", "")))
        if not 0 < ident < 2**31:
            return ""
        return reverse(name, kwargs={kwarg: ident})
    except (ValueError, NoReverseMatch):
        return ""
