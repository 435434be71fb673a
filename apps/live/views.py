from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.accounts.models import User
from apps.bots.models import Bot
from apps.core.input_validation import InputError, parse_id
from apps.events.selectors import settled_seq
from apps.events.services import event_json
from apps.live.dashboard import dashboard_context
from apps.live.selectors import VIEW_PERM, visible_events


def _bad(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@never_cache
@require_GET
def events(request: HttpRequest) -> JsonResponse:
    """Catch-up after a reconnect: events after `after` (and of `bot`), that this user may see."""
    user = request.user
    assert isinstance(user, User)  # RequireVerifiedMiddleware let only verified users through
    if not user.has_perm(VIEW_PERM):
        return _bad("You may not view the console.", status=403)
    # Digits only ("²" and "٣" are digits to str.isdigit, not to int()), within a bigint.
    try:
        after = parse_id(request.GET.get("after", "0"), name="after", lo=0)
    except InputError:
        return _bad("`after` must be a non-negative whole number (the last seq you received).")
    try:
        bot_id = parse_id(request.GET.get("bot"), name="bot", required=False)
    except InputError:
        return _bad("`bot` must be a bot id (a whole number).")
    if bot_id is not None and not Bot.objects.filter(pk=bot_id).exists():
        return _bad("No such bot.", status=404)
    assert after is not None
    # Only settled events: a page whose cursor moved past a number an open transaction still holds
    # would never show that row once it commits (apps/events/selectors.settled_seq).
    found = visible_events(user, after=after, bot_id=bot_id, upto=settled_seq())
    return JsonResponse({"events": [event_json(e) for e in found], "last": found[-1].seq if found else after})


@permission_required("accounts.view_console", raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    return render(request, "live/dashboard.html", dashboard_context(request.user))
