from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.accounts.decorators import require_step_up
from apps.accounts.selectors import acting_user
from apps.bots import selectors, services
from apps.bots.form_help import SYMBOL, first_symbol, market_json
from apps.bots.forms import BotForm, FlattenOnKillForm, UnknownStrategyError, parse_symbols, strategy_from
from apps.bots.halt_forms import HaltClearForm
from apps.bots.halts import halt_of
from apps.bots.models import Bot
from apps.core.exceptions import ApplicationError
from apps.core.input_validation import InputError, parse_id, parse_uuid
from apps.events.selectors import event_cursor
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.port import ExchangeError
from apps.exchanges.selectors import MarketQuote, UnlistedSymbolError, market_quote
from apps.killswitch.halt_clear import CLEAR_PERM, bot_halt_clear, halt_conditions
from apps.strategies import REGISTRY
from apps.strategies.base import Strategy
from apps.trading import logs as bot_logs
from apps.trading import selectors as trading_selectors
from apps.trading.preview import TickPreview, first_tick_preview

VIEW, OPERATE, LIVE = "accounts.view_console", "accounts.operate_bots", "accounts.enable_live_mode"
# An edit that waits for the admin's fresh code: {"bot": id, "strategy": key, "data": the submitted fields}.
# Kept in the session so the admin comes back from step-up to the form as they filled it in (not saved).
PENDING_EDIT = "bc_bot_edit_pending"
# What the bot form posts besides its fields: switching strategy without script, and asking for a preview.
SWITCH, PREVIEW = "switch_strategy", "preview"
FORM_CONTROLS = ("csrfmiddlewaretoken", "strategy", SWITCH, PREVIEW)


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
        strategy, switching = _chosen_strategy(request, default="grid")
        initial = _query_initial(request.GET) if request.method == "GET" else None
    except (UnknownStrategyError, InputError) as exc:
        return _bad_request(request, exc.message)
    page: dict[str, object] = {"title": "New bot"}
    if switching:
        return _form_page(request, BotForm(initial=_typed(request.POST), strategy=strategy), page)
    form = BotForm(request.POST or None, initial=initial, strategy=strategy)
    if request.method == "POST" and PREVIEW not in request.POST and form.is_valid():
        bot = services.bot_create(bot=form.save(commit=False), actor=acting_user(request), request=request)
        messages.success(request, f"{bot.name} created (paper mode, stopped).")
        return redirect("bots:detail", bot_id=bot.pk)
    return _form_page(request, form, page)


@never_cache
@permission_required(OPERATE, raise_exception=True)
@require_http_methods(["GET", "POST"])
def bot_edit_view(request: HttpRequest, bot_id: int) -> HttpResponse:
    bot = get_object_or_404(Bot, pk=bot_id)
    if bot.archived_at is not None:
        messages.error(request, f"{bot.name} is archived: an admin must unarchive it before it can be edited.")
        return redirect("bots:detail", bot_id=bot.pk)
    try:
        strategy, switching = _chosen_strategy(request, default=bot.strategy)
    except UnknownStrategyError as exc:
        return _bad_request(request, exc.message)
    stored = Bot.objects.get(pk=bot.pk)  # what the page shows besides the form; the form edits `bot`
    page: dict[str, object] = {
        "title": f"Edit {stored.name}",
        "bot": stored,
        "can_live": request.user.has_perm(LIVE),
        "live_bot": stored.mode == Bot.Mode.LIVE,
        "flatten_form": FlattenOnKillForm(initial={"flatten_on_kill": "on" if stored.flatten_on_kill else "off"}),
    }
    if switching:
        return _form_page(request, BotForm(initial=_typed(request.POST), instance=bot, strategy=strategy), page)
    data, restored = request.POST or None, False
    pending = request.session.get(PENDING_EDIT)
    if request.method == "GET" and isinstance(pending, dict) and pending.get("bot") == bot.pk:
        del request.session[PENDING_EDIT]
        if pending.get("strategy") == strategy.key and isinstance(pending.get("data"), dict):
            data, restored = pending["data"], True
    form = BotForm(data, instance=bot, strategy=strategy)
    status = None
    if request.method == "POST" and PREVIEW not in request.POST and form.is_valid():
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
    return _form_page(request, form, {**page, "restored": restored}, status=status)


def _chosen_strategy(request: HttpRequest, *, default: str) -> tuple[type[Strategy], bool]:
    """The strategy the form is for, and whether the request only switches to it (the form's strategy buttons,
    submitted without script: nothing is saved, every value is shown again)."""
    if request.method == "POST" and SWITCH in request.POST:
        return strategy_from(request.POST, default, key=SWITCH), True
    return strategy_from(request.POST if "strategy" in request.POST else request.GET, default), False


def _typed(data: QueryDict) -> dict[str, str]:
    """What a form submitted, as the initial values of the form shown again."""
    return {name: data.get(name, "") for name in data if name not in FORM_CONTROLS}


def _query_initial(query: QueryDict) -> dict[str, object]:
    """`?account=<id>&symbols=BTC/USDT` fill the new-bot form in (links may say which market); InputError if bad."""
    initial: dict[str, object] = {}
    if "account" in query:
        initial["account"] = parse_uuid(query.get("account"), name="account")
    if "symbols" in query:
        try:
            initial["symbols"] = ", ".join(parse_symbols(query.get("symbols", "")))
        except ValidationError as exc:
            raise InputError(" ".join(exc.messages)) from None
    return initial


def _form_page(
    request: HttpRequest, form: BotForm, page: dict[str, object], *, status: int | None = None
) -> HttpResponse:
    """The bot form with the market beside its fields and, when asked, the preview of a first tick."""
    preview, preview_error = None, ""
    if form.is_bound and PREVIEW in request.POST:
        preview, preview_error = _preview(form)
    form.apply_market(*_market_of(form))
    context = {
        "form": form,
        "strategy": form.strategy,
        "strategies": REGISTRY.values(),
        "sections": form.sections(),
        "preview": preview,
        "preview_error": preview_error,
        "asked_preview": form.is_bound and PREVIEW in request.POST,
        **page,
    }
    if status is None:
        status = 400 if form.errors and preview is None else 200
    return render(request, "bots/form.html", context, status=status)


def _preview(form: BotForm) -> tuple[TickPreview | None, str]:
    form.is_valid()
    bot = form.preview_bot()
    if bot is None or form.strategy_values is None:
        return None, "Give a valid account, symbols listed on its exchange and valid strategy values to preview."
    try:
        return first_tick_preview(bot=bot, strategy=form.strategy, values=form.strategy_values), ""
    except ExchangeError as exc:
        return None, f"Could not read the market to preview the first tick: {exc.message}"


def _market_of(form: BotForm) -> tuple[MarketQuote | None, str]:
    """The market of the form's account and first symbol, or None and why not ("" when none is chosen yet)."""
    accounts = form.fields["account"].queryset  # type: ignore[attr-defined]
    raw = form["account"].value()
    try:
        account_id = parse_uuid(None if raw in (None, "") else str(raw), name="account", required=False)
    except InputError:
        return None, ""
    account = accounts.first() if account_id is None else accounts.filter(pk=account_id).first()
    symbol = first_symbol(form["symbols"].value())
    if account is None or symbol is None:
        return None, ""
    try:
        return market_quote(exchange_id=account.exchange_id, symbol=symbol), ""
    except ExchangeError as exc:
        return None, f"Market unavailable: {exc.message}"


def _json_refusal(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@never_cache
@require_GET
def bot_market_view(request: HttpRequest) -> JsonResponse:
    """The bot form's market: price, order rules, the sentences shown beside the fields and fitted values."""
    if not request.user.has_perm(OPERATE):
        return _json_refusal("You may not create or edit bots.", status=403)
    try:
        account_id = parse_uuid(request.GET.get("account"), name="account")
    except InputError as exc:
        return _json_refusal(exc.message)
    symbol = request.GET.get("symbol", "").strip().upper()
    if not SYMBOL.fullmatch(symbol):
        return _json_refusal("`symbol` must be written BASE/QUOTE in letters and digits, e.g. BTC/USDT.")
    account = ExchangeAccount.objects.filter(pk=account_id).first() if account_id else None
    if account is None:
        return _json_refusal("There is no such exchange account.")
    try:
        quote = market_quote(exchange_id=account.exchange_id, symbol=symbol)
    except UnlistedSymbolError as exc:
        return _json_refusal(exc.message)
    except ExchangeError as exc:
        # The exchange, not the request, failed: the form still works, without the market beside it.
        return JsonResponse({"error": f"Market unavailable: {exc.message}"})
    return JsonResponse(market_json(quote))


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
