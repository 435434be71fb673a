from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.decorators import require_step_up, safe_next
from apps.accounts.models import User
from apps.bots.models import Bot
from apps.bots.selectors import event_cursor, global_halt_reason
from apps.core.exceptions import ApplicationError
from apps.killswitch.models import Alert, BreakerRule, BreakerTrip, KillRun
from apps.killswitch.services import kill_request, trading_resume


def _actor(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@never_cache
@permission_required("accounts.trigger_killswitch", raise_exception=True)
@require_POST
def kill_view(request: HttpRequest) -> HttpResponse:
    bot = get_object_or_404(Bot, pk=request.POST["bot"]) if request.POST.get("bot") else None
    try:
        run = kill_request(actor=_actor(request), reason=request.POST.get("reason", ""), bot=bot, request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(safe_next(request, request.META.get("HTTP_REFERER"), "/"))
    return redirect("killswitch:run", run_id=run.pk)


@never_cache
@permission_required("accounts.view_console", raise_exception=True)
def run_list_view(request: HttpRequest) -> HttpResponse:
    return render(
        request, "killswitch/runs.html", {"runs": KillRun.objects.select_related("bot", "requested_by")[:100]}
    )


@never_cache
@permission_required("accounts.view_console", raise_exception=True)
def run_detail_view(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(KillRun.objects.select_related("bot", "requested_by"), pk=run_id)
    return render(request, "killswitch/run.html", {"run": run, "cursor": event_cursor()})


@never_cache
@permission_required("accounts.view_console", raise_exception=True)
def alert_list_view(request: HttpRequest) -> HttpResponse:
    from apps.killswitch.alerts import ADMIN_ALERTS

    alerts = Alert.objects.all()[:200]
    if not request.user.has_perm("accounts.manage_exchange_accounts"):
        alerts = Alert.objects.exclude(kind__in=ADMIN_ALERTS)[:200]
    return render(request, "killswitch/alerts.html", {"alerts": alerts})


@never_cache
@permission_required("accounts.resume_after_kill", raise_exception=True)
@require_step_up
@require_http_methods(["GET", "POST"])
def resume_view(request: HttpRequest) -> HttpResponse:
    reason = request.POST.get("reason", "")
    error = None
    if request.method == "POST":
        try:
            trading_resume(actor=_actor(request), reason=reason, request=request)
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, "Trading resumed. Bots stay stopped until each is started again.")
            return redirect("core:dashboard")
    context = {"halt_reason": global_halt_reason(), "reason": reason, "error": error}
    return render(request, "killswitch/resume.html", context, status=400 if error else 200)


@never_cache
@permission_required("accounts.view_console", raise_exception=True)
def breakers_view(request: HttpRequest) -> HttpResponse:
    from apps.killswitch.breakers import rules_for_page

    context = {
        "rules": rules_for_page(),
        "actions": BreakerRule.Action.choices,
        "trips": BreakerTrip.objects.all()[:50],
        "can_edit": request.user.has_perm("accounts.resume_after_kill"),
    }
    return render(request, "killswitch/breakers.html", context)


@never_cache
@permission_required("accounts.resume_after_kill", raise_exception=True)
@require_POST
@require_step_up
def breaker_update_view(request: HttpRequest, kind: str) -> HttpResponse:
    from apps.killswitch.breakers import breaker_rule_update_from_input

    try:
        breaker_rule_update_from_input(actor=_actor(request), kind=kind, data=request.POST, request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Circuit breaker {kind} saved.")
    return redirect("killswitch:breakers")
