from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode, urlparse

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from apps.accounts.services import step_up_is_fresh
from apps.core.input_validation import has_control_characters

View = Callable[..., HttpResponse]


def safe_next(request: HttpRequest, candidate: str | None, default: str = "/") -> str:
    # A control character would end up in the Location header (a line break splits it; Django refuses it).
    if (
        candidate
        and len(candidate) <= 2000
        and not has_control_characters(candidate)
        and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        return candidate
    return default


def require_step_up(view: View) -> View:
    """Ask for a fresh TOTP code (within STEP_UP_TTL) before a sensitive action.

    A POST that arrives without a fresh step-up is not performed: the user confirms with a
    code and is sent back to the page the form was on, to submit it again.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if step_up_is_fresh(request):
            return view(request, *args, **kwargs)
        if request.method == "GET":
            back = request.get_full_path()
        else:
            referer = urlparse(request.META.get("HTTP_REFERER", ""))
            back = safe_next(request, referer.path + (f"?{referer.query}" if referer.query else ""), "/")
        return redirect(f"{reverse('accounts:step_up')}?{urlencode({'next': back})}")

    return wrapped
