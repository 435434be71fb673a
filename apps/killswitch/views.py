from __future__ import annotations

import re

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.db.models import Min
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts.decorators import require_step_up
from apps.accounts.selectors import acting_user
from apps.bots.halts import global_halt_reason
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.core.text import resume_reason_problem
from apps.events.models import Event
from apps.events.selectors import event_cursor
from apps.killswitch.breaker_rules import DEFAULTS, breaker_rule_update_from_input, rules_for_page
from apps.killswitch.models import BreakerRule, BreakerTrip, KillRun
from apps.killswitch.report import balances_table, result_line, run_state
from apps.killswitch.selectors import bots_to_restart
from apps.killswitch.services import ResumeOutcome, ResumeRefused, active_runs, kill_press, trading_resume

_BOT_ID = re.compile(r"[0-9]{1,19}")
BIGINT_MAX = 2**63 - 1


def bot_id_from(raw: str) -> int | None:
    """The `bot` field of a per-bot stop: None when absent (the global button has no such field).

    Raises ValueError unless it is a plain id: ASCII digits only, within the id column (bigint).
    """
    raw = raw.strip()
    if not raw:
        return None
    if not _BOT_ID.fullmatch(raw) or int(raw) > BIGINT_MAX:
        raise ValueError(raw)
    return int(raw)


@never_cache
@permission_required("accounts.trigger_killswitch", raise_exception=True)
@require_POST
def kill_view(request: HttpRequest) -> HttpResponse:
    """The panic button (no `bot` field) and a bot's emergency stop (`bot` = its id).

    The reason never stops a kill (it is cleaned and cut). A malformed `bot` is refused with 400 and
    a well-formed id of no bot with 404, before anything changes: a per-bot request whose target is
    unclear halts nothing rather than guessing. The global button never sends the field.
    """
    try:
        bot_id = bot_id_from(request.POST.get("bot", ""))
    except ValueError:
        message = (
            "The bot to stop is given by its id, a whole number. Nothing was halted: press again from the bot's page."
        )
        return render(request, "killswitch/kill_refused.html", {"message": message}, status=400)
    bot = get_object_or_404(Bot, pk=bot_id) if bot_id is not None else None
    press = kill_press(actor=acting_user(request), reason=request.POST.get("reason", ""), bot=bot, request=request)
    for failure in press.failures:
        messages.error(request, failure)
    if press.run is None:
        return redirect("killswitch:runs")
    if press.joined:
        scope = "every bot" if press.run.scope == KillRun.Scope.ALL else "this bot"
        messages.info(request, f"Kill run #{press.run.pk} ({scope}) was already in progress: this press joined it.")
    return redirect("killswitch:run", run_id=press.run.pk)


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
    # The feed starts just before the run's first event, so a page opened mid-run still lists every step.
    first = Event.objects.filter(kind=Event.Kind.KILL_SWITCH, payload__run=run.pk).aggregate(first=Min("seq"))["first"]
    cursor = first - 1 if first is not None else event_cursor()
    context = {"run": run, "cursor": cursor, "result": result_line(run), "balances": balances_table(run)}
    return render(request, "killswitch/run.html", context)


@never_cache
@permission_required("accounts.view_console", raise_exception=True)
@require_GET
def run_state_view(request: HttpRequest, run_id: int) -> JsonResponse:
    """The report's figures as JSON: what the report page fetches as the run's live events arrive."""
    run = get_object_or_404(KillRun, pk=run_id)
    return JsonResponse(run_state(run))


@never_cache
@permission_required("accounts.resume_after_kill", raise_exception=True)
@require_step_up
@require_http_methods(["GET", "POST"])
def resume_view(request: HttpRequest) -> HttpResponse:
    reason = request.POST.get("reason", "")
    error, status = None, 200
    offered = bots_to_restart()
    checked = {b.pk for b in offered}  # every bot checked by default; a refused POST shows what was sent
    if request.method == "POST":
        try:
            checked = {bot_id_from(raw) or 0 for raw in request.POST.getlist("restart")}
        except ValueError:
            error, status = "The bots to restart are given by their ids. Nothing was changed.", 400
        if error is None:
            try:
                outcome = trading_resume(actor=acting_user(request), reason=reason, restart=checked, request=request)
            except ResumeRefused as exc:
                error, status = exc.message, 409
            except ApplicationError as exc:
                error, status = exc.message, 400
            else:
                _resume_messages(request, outcome)
                return redirect("live:dashboard")
    # Echoed back only when it is fit to show (no control characters), and never longer than the field.
    shown = reason if resume_reason_problem(reason) is None else ""
    context = {
        "halt_reason": global_halt_reason(),
        "reason": shown,
        "error": error,
        "active_runs": active_runs().order_by("created_at", "pk")[:5],
        "offered": [(bot, bot.pk in checked) for bot in offered],
    }
    return render(request, "killswitch/resume.html", context, status=status)


def _resume_messages(request: HttpRequest, outcome: ResumeOutcome) -> None:
    if outcome.started:
        names = ", ".join(bot.name for bot in outcome.started)
        messages.success(request, f"Trading resumed. Started again: {names}. Every other bot stays stopped.")
    else:
        messages.success(request, "Trading resumed. Bots stay stopped until each is started again.")
    for bot, why in outcome.refused:
        messages.error(request, f"{bot.name} was not started again: {why}")


@never_cache
@permission_required("accounts.view_console", raise_exception=True)
def breakers_view(request: HttpRequest) -> HttpResponse:
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
    if kind not in DEFAULTS:
        raise Http404("No such circuit breaker.")

    try:
        breaker_rule_update_from_input(actor=acting_user(request), kind=kind, data=request.POST, request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Circuit breaker {kind} saved.")
    return redirect("killswitch:breakers")
