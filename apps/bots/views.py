from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.decorators import require_step_up
from apps.accounts.models import User
from apps.bots import selectors, services
from apps.bots.forms import BotForm, FlattenOnKillForm, strategy_from
from apps.bots.models import Bot
from apps.bots.strategies import REGISTRY
from apps.core.exceptions import ApplicationError

VIEW, OPERATE, LIVE = "accounts.view_console", "accounts.operate_bots", "accounts.enable_live_mode"


def _actor(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@never_cache
@permission_required(VIEW, raise_exception=True)
def bot_list_view(request: HttpRequest) -> HttpResponse:
    context = {
        "rows": selectors.bot_rows(),
        "hosts": selectors.fleet_hosts(),
        "can_operate": request.user.has_perm(OPERATE),
    }
    return render(request, "bots/list.html", context)


@never_cache
@permission_required(VIEW, raise_exception=True)
def bot_detail_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot.objects.select_related("account"), pk=bot_id)
    context = {
        "bot": bot, "strategy": REGISTRY[bot.strategy], **selectors.bot_activity(bot),
        "cursor": selectors.event_cursor(),
        "can_operate": request.user.has_perm(OPERATE), "can_live": request.user.has_perm(LIVE),
    }  # fmt: skip
    return render(request, "bots/detail.html", context)


@never_cache
@permission_required(OPERATE, raise_exception=True)
@require_http_methods(["GET", "POST"])
def bot_create_view(request: HttpRequest) -> HttpResponse:
    strategy = strategy_from(request.GET)
    form = BotForm(request.POST or None, strategy=strategy)
    if request.method == "POST" and form.is_valid():
        bot = services.bot_create(bot=form.save(commit=False), actor=_actor(request), request=request)
        messages.success(request, f"{bot.name} created (paper mode, stopped).")
        return redirect("bots:detail", bot_id=bot.pk)
    context = {"form": form, "strategy": strategy, "strategies": REGISTRY.values(), "title": "New bot"}
    return render(request, "bots/form.html", context, status=400 if form.errors else 200)


@never_cache
@permission_required(OPERATE, raise_exception=True)
@require_http_methods(["GET", "POST"])
def bot_edit_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot, pk=bot_id)
    before = services.bot_snapshot(bot)
    strategy = strategy_from(request.GET, default=bot.strategy)
    form = BotForm(request.POST or None, instance=bot, strategy=strategy)
    if request.method == "POST" and form.is_valid():
        services.bot_update(bot=form.save(commit=False), before=before, actor=_actor(request), request=request)
        messages.success(request, f"{bot.name} saved.")
        return redirect("bots:detail", bot_id=bot.pk)
    context = {
        "form": form,
        "strategy": strategy,
        "strategies": REGISTRY.values(),
        "title": f"Edit {bot.name}",
        "bot": bot,
        "can_live": request.user.has_perm(LIVE),
        "flatten_form": FlattenOnKillForm(initial={"flatten_on_kill": "on" if bot.flatten_on_kill else "off"}),
    }
    return render(request, "bots/form.html", context, status=400 if form.errors else 200)


def _act(request: HttpRequest, bot_id: int, action: str) -> HttpResponse:
    bot = get_object_or_404(Bot.objects.select_related("account"), pk=bot_id)
    actor = _actor(request)
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
        messages.success(request, {"start": "Start requested.", "stop": "Stop requested.", "live": "Now in live mode.",
                                   "paper": "Now in paper mode."}[action])  # fmt: skip
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
        services.bot_set_flatten_on_kill(bot=bot, flatten=flatten, actor=_actor(request), request=request)
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
