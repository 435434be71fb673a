from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.decorators import require_step_up
from apps.accounts.selectors import acting_user
from apps.bots.selectors import bots_using
from apps.core.exceptions import ApplicationError
from apps.exchanges import selectors, services
from apps.exchanges.forms import ExchangeAccountForm, RotateForm
from apps.exchanges.models import ExchangeAccount
from apps.exchanges.tasks import exchange_account_check_request

SECRET_FIELDS = ("apiKey", "secret", "password")
MANAGE = "accounts.manage_exchange_accounts"


@never_cache
@permission_required("accounts.view_console", raise_exception=True)
def account_list_view(request: HttpRequest) -> HttpResponse:
    accounts = [(a, bots_using(a)) for a in selectors.exchange_accounts()]
    return render(request, "exchanges/list.html", {"accounts": accounts, "can_manage": request.user.has_perm(MANAGE)})


def _key_form_view(
    request: HttpRequest,
    form: ExchangeAccountForm | RotateForm,
    context: dict[str, object],
    save: Callable[[], tuple[str, list[str]]],
) -> HttpResponse:
    """Shared by add and rotate: run the save, report refusals on the form, warnings as messages."""
    if request.method == "POST" and form.is_valid():
        try:
            done, warnings = save()
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, done)
            for warning in warnings:
                messages.warning(request, warning)
            return redirect("exchanges:list")
    return render(request, "exchanges/form.html", {"form": form, **context}, status=400 if form.errors else 200)


@sensitive_post_parameters(*SECRET_FIELDS)
@never_cache
@permission_required(MANAGE, raise_exception=True)
@require_step_up
@require_http_methods(["GET", "POST"])
def account_add_view(request: HttpRequest) -> HttpResponse:
    form = ExchangeAccountForm(request.POST or None)

    def save() -> tuple[str, list[str]]:
        account, warnings = services.exchange_account_create(
            label=form.cleaned_data["label"],
            exchange_id=form.cleaned_data["exchange_id"],
            credentials=form.credentials(),
            attested_no_withdrawals=form.cleaned_data["attest_no_withdrawals"],
            actor=acting_user(request),
            request=request,
        )
        return f"{account.label} added; its key is stored in Vault only.", warnings

    return _key_form_view(request, form, {"title": "Add an exchange account"}, save)


@sensitive_post_parameters(*SECRET_FIELDS)
@never_cache
@permission_required(MANAGE, raise_exception=True)
@require_step_up
@require_http_methods(["GET", "POST"])
def account_rotate_view(request: HttpRequest, account_id: str) -> HttpResponse:
    account = get_object_or_404(ExchangeAccount, id=account_id)
    form = RotateForm(request.POST or None)

    def save() -> tuple[str, list[str]]:
        warnings = services.exchange_account_rotate(
            account=account,
            credentials=form.credentials(),
            attested_no_withdrawals=form.cleaned_data["attest_no_withdrawals"],
            actor=acting_user(request),
            request=request,
        )
        return f"{account.label}: key rotated (Vault version {account.kv_version}).", warnings

    return _key_form_view(request, form, {"title": f"Rotate the key of {account.label}", "account": account}, save)


@never_cache
@permission_required(MANAGE, raise_exception=True)
@require_POST
def account_check_view(request: HttpRequest, account_id: str) -> HttpResponse:
    account = get_object_or_404(ExchangeAccount, id=account_id)
    try:
        exchange_account_check_request(account=account, actor=acting_user(request), request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.info(
            request, f"{account.label}: check queued; the result appears here when the control worker is done."
        )
    return redirect("exchanges:list")


@never_cache
@permission_required(MANAGE, raise_exception=True)
@require_step_up
@require_http_methods(["GET", "POST"])
def account_delete_view(request: HttpRequest, account_id: str) -> HttpResponse:
    account = get_object_or_404(ExchangeAccount, id=account_id)
    if request.method == "POST":
        try:
            services.exchange_account_delete(account=account, actor=acting_user(request), request=request)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{account.label} deleted; every version of its key was destroyed in Vault.")
            return redirect("exchanges:list")
    return render(request, "exchanges/delete.html", {"account": account, "bots": bots_using(account)})
