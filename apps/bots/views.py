from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.decorators import require_step_up
from apps.accounts.selectors import acting_user
from apps.bots import selectors, services
from apps.bots.forms import BotForm, FlattenOnKillForm, UnknownStrategyError, strategy_from
from apps.bots.halt_forms import HaltClearForm
from apps.bots.halts import halt_of
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.core.input_validation import InputError, parse_id
from apps.events.selectors import event_cursor
from apps.killswitch.halt_clear import CLEAR_PERM, bot_halt_clear, halt_conditions
from apps.strategies import REGISTRY
from apps.trading import logs as bot_logs
from apps.trading import selectors as trading_selectors

VIEW, OPERATE, LIVE = "accounts.view_console", "accounts.operate_bots", "accounts.enable_live_mode"
# An edit that waits for the admin's fresh code: {"bot": id, "strategy": key, "data": the submitted fields}.
# Kept in the session so the admin comes back from step-up to the form as they filled it in (not saved).
PENDING_EDIT = "bc_bot_edit_pending"


@never_cache
@permission_required(VIEW, raise_exception=True)
def bot_list_view(request: HttpRequest) -> HttpResponse:
    return _bot_list(request)


def _bot_list(request: HttpRequest, *, fleet_error: str = "", status: int = 200) -> HttpResponse:
    # ?archived=1 lists the archived bots instead of the active ones (archived bots cannot be started).
    archived = request.GET.get("archived") == "1"
    context = {
        "rows": trading_selectors.bot_rows(archived=archived),
        "hosts": selectors.fleet_hosts(),
        "can_operate": request.user.has_perm(OPERATE),
        "archived": archived,
        "archived_count": selectors.archived_count(),
        "fleet_error": fleet_error,
    }
    return render(request, "bots/list.html", context, status=status)


@never_cache
@permission_required(VIEW, raise_exception=True)
def bot_detail_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot.objects.select_related("account"), pk=bot_id)
    try:
        log_level = bot_logs.bot_log_level_parse(request.GET.get("level"))
    except InputError as exc:
        return _bad_request(request, exc.message)
    context = {
        "bot": bot,
        "strategy": REGISTRY[bot.strategy],
        **trading_selectors.bot_activity(bot),
        "cursor": event_cursor(),
        "can_operate": request.user.has_perm(OPERATE),
        "can_live": request.user.has_perm(LIVE),
        **_halt_context(request, bot),
        "log_lines": bot_logs.bot_log_lines(bot_id=bot.pk, min_level=log_level),
        "log_level": log_level or 0,
        "log_levels": bot_logs.LEVELS,
        "log_retention_days": settings.BOT_LOG_RETENTION_DAYS,
        "start_problem": selectors.bot_start_problem(bot),
    }
    return render(request, "bots/detail.html", context)


@never_cache
@permission_required(OPERATE, raise_exception=True)
@require_http_methods(["GET", "POST"])
def bot_create_view(request: HttpRequest) -> HttpResponse:
    try:
        strategy = strategy_from(request.GET)
    except UnknownStrategyError as exc:
        return _bad_request(request, exc.message)
    form = BotForm(request.POST or None, strategy=strategy)
    if request.method == "POST" and form.is_valid():
        bot = services.bot_create(bot=form.save(commit=False), actor=acting_user(request), request=request)
        messages.success(request, f"{bot.name} created (paper mode, stopped).")
        return redirect("bots:detail", bot_id=bot.pk)
    context = {"form": form, "strategy": strategy, "strategies": REGISTRY.values(), "title": "New bot"}
    return render(request, "bots/form.html", context, status=400 if form.errors else 200)


@never_cache
@permission_required(OPERATE, raise_exception=True)
@require_http_methods(["GET", "POST"])
def bot_edit_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot, pk=bot_id)
    if bot.archived_at is not None:
        messages.error(request, f"{bot.name} is archived: an admin must unarchive it before it can be edited.")
        return redirect("bots:detail", bot_id=bot.pk)
    try:
        strategy = strategy_from(request.GET, default=bot.strategy)
    except UnknownStrategyError as exc:
        return _bad_request(request, exc.message)
    stored = Bot.objects.get(pk=bot.pk)  # what the page shows besides the form; the form edits `bot`
    data, restored = request.POST or None, False
    pending = request.session.get(PENDING_EDIT)
    if request.method == "GET" and isinstance(pending, dict) and pending.get("bot") == bot.pk:
        del request.session[PENDING_EDIT]
        if pending.get("strategy") == strategy.key and isinstance(pending.get("data"), dict):
            data, restored = pending["data"], True
    form = BotForm(data, instance=bot, strategy=strategy)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            services.bot_update(bot=form.save(commit=False), actor=acting_user(request), request=request)
        except services.StepUpNeededError as exc:
            submitted = {name: request.POST.get(name, "") for name in form.fields}
            request.session[PENDING_EDIT] = {"bot": bot.pk, "strategy": strategy.key, "data": submitted}
            messages.info(request, f"{exc.message} Your changes are filled in again afterwards: press Save to apply.")
            back = f"{reverse('bots:edit', kwargs={'bot_id': bot.pk})}?{urlencode({'strategy': strategy.key})}"
            return redirect(f"{reverse('accounts:step_up')}?{urlencode({'next': back})}")
        except ApplicationError as exc:
            form.add_error(None, exc.message)
            status = 403
        else:
            messages.success(request, f"{bot.name} saved.")
            return redirect("bots:detail", bot_id=bot.pk)
    context = {
        "form": form,
        "strategy": strategy,
        "strategies": REGISTRY.values(),
        "title": f"Edit {stored.name}",
        "bot": stored,
        "restored": restored,
        "can_live": request.user.has_perm(LIVE),
        "live_bot": stored.mode == Bot.Mode.LIVE,
        "flatten_form": FlattenOnKillForm(initial={"flatten_on_kill": "on" if stored.flatten_on_kill else "off"}),
    }
    if form.errors and status == 200:
        status = 400
    return render(request, "bots/form.html", context, status=status)


def _bad_request(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "bots/bad_request.html", {"error": message}, status=400)


def _act(request: HttpRequest, bot_id: int, action: str) -> HttpResponse:
    bot = get_object_or_404(Bot.objects.select_related("account"), pk=bot_id)
    actor = acting_user(request)
    try:
        if action == "start":
            services.bot_start(bot=bot, actor=actor, request=request)
        elif action == "stop":
            services.bot_stop(bot=bot, actor=actor, request=request)
        elif action == "clone":
            clone = services.bot_clone(bot=bot, actor=actor, request=request)
            messages.success(request, f"Cloned as {clone.name} (paper mode, stopped).")
            return redirect("bots:edit", bot_id=clone.pk)
        elif action in ("live", "paper"):
            services.bot_set_mode(bot=bot, mode=action, actor=actor, request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            {
                "start": "Start requested.",
                "stop": "Stop requested.",
                "live": "Now in live mode.",
                "paper": "Now in paper mode.",
            }[action],
        )
    return redirect(reverse("bots:detail", kwargs={"bot_id": bot.pk}))


@never_cache
@permission_required(OPERATE, raise_exception=True)
@require_POST
def bot_action_view(request: HttpRequest, bot_id: int, action: str) -> HttpResponse:
    if action not in ("start", "stop", "clone", "paper"):
        return HttpResponse("Unknown action.", status=404)
    return _act(request, bot_id, action)


@never_cache
@permission_required(LIVE, raise_exception=True)
@require_POST
@require_step_up
def bot_go_live_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    return _act(request, bot_id, "live")


@never_cache
@permission_required(LIVE, raise_exception=True)
@require_POST
@require_step_up
def bot_flatten_on_kill_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot, pk=bot_id)
    form = FlattenOnKillForm(request.POST)
    if not form.is_valid():
        messages.error(
            request, "Choose whether the kill switch sells the bot's position or leaves it; nothing changed."
        )
        return redirect("bots:edit", bot_id=bot.pk)
    flatten = bool(form.cleaned_data["flatten_on_kill"])
    try:
        services.bot_set_flatten_on_kill(bot=bot, flatten=flatten, actor=acting_user(request), request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"A kill now market-sells {bot.name}'s position."
            if flatten
            else f"A kill now leaves {bot.name}'s position.",
        )
    return redirect("bots:edit", bot_id=bot.pk)


# --- Fleet actions and archiving -------------------------------------------------------------------


@never_cache
@permission_required(OPERATE, raise_exception=True)
@require_POST
def bot_fleet_action_view(request: HttpRequest) -> HttpResponse:
    """Start or stop the bots ticked on the list; each bot's outcome becomes one message."""
    try:
        bot_ids = [parse_id(raw, name="bot") for raw in request.POST.getlist("bot")]
    except InputError:
        return _bot_list(request, fleet_error="A selected bot id is not a bot id; nothing was changed.", status=400)
    try:
        outcomes = services.bots_fleet_act(
            bot_ids=[pk for pk in bot_ids if pk is not None],
            action=request.POST.get("action", ""),
            actor=acting_user(request),
            request=request,
        )
    except ApplicationError as exc:
        return _bot_list(request, fleet_error=exc.message, status=400)
    for outcome in outcomes:
        (messages.success if outcome.ok else messages.error)(request, f"{outcome.name}: {outcome.message}")
    return redirect("bots:list")


@never_cache
@permission_required(OPERATE, raise_exception=True)
@require_POST
def bot_archive_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot, pk=bot_id)
    try:
        services.bot_archive(
            bot=bot,
            actor=acting_user(request),
            open_orders=trading_selectors.bot_open_order_count,
            request=request,
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("bots:detail", bot_id=bot.pk)
    messages.success(request, f"{bot.name} archived: it is out of the bots list and cannot be started or edited.")
    return redirect("bots:detail", bot_id=bot.pk)


@never_cache
@permission_required(LIVE, raise_exception=True)
@require_POST
def bot_unarchive_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot, pk=bot_id)
    try:
        services.bot_unarchive(bot=bot, actor=acting_user(request), request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{bot.name} unarchived (stopped).")
    return redirect("bots:detail", bot_id=bot.pk)


# -- a bot's halt: what set it, and an admin clearing it ------------------------------------------


def _halt_context(request: HttpRequest, bot: Bot) -> dict[str, object]:
    return {
        "books": trading_selectors.bot_books(bot),
        "halt": halt_of(bot),
        "halt_conditions": halt_conditions(bot) if bot.halted else [],
        "can_clear_halt": request.user.has_perm(CLEAR_PERM),
    }


@never_cache
@permission_required(CLEAR_PERM, raise_exception=True)
@require_POST
@require_step_up
def bot_halt_clear_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot, pk=bot_id)
    form = HaltClearForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.error_messages_flat()) + " Nothing was changed.")
        return redirect("bots:detail", bot_id=bot.pk)
    try:
        overridden = bot_halt_clear(
            bot=bot,
            actor=acting_user(request),
            reason=form.cleaned_data["reason"],
            override=form.cleaned_data["override"],
            request=request,
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        note = " (overriding what still held)" if overridden else ""
        messages.success(request, f"{bot.name}'s halt is cleared{note}. It stays stopped until someone starts it.")
    return redirect("bots:detail", bot_id=bot.pk)
