"""The alert webhook's settings page (admins, with a fresh TOTP code)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.decorators import require_step_up
from apps.accounts.selectors import acting_user
from apps.alerts import selectors
from apps.alerts import webhook as services
from apps.alerts.forms import AlertWebhookForm
from apps.alerts.models import Alert
from apps.core.exceptions import ApplicationError


@sensitive_post_parameters("secret")
@never_cache
@permission_required(services.MANAGE, raise_exception=True)
@require_step_up
@require_http_methods(["GET", "POST"])
def webhook_view(request: HttpRequest) -> HttpResponse:
    config = selectors.alert_webhook_get()
    form = AlertWebhookForm(request.POST or None, initial={"url": config.url})
    if request.method == "POST" and form.is_valid():
        try:
            services.alert_webhook_configure(
                url=form.cleaned_data["url"],
                secret=form.cleaned_data["secret"],
                actor=acting_user(request),
                request=request,
            )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Alert webhook saved and switched on.")
            return redirect("alerts:webhook")
    recent = Alert.objects.exclude(webhook_status=Alert.WebhookStatus.NONE)[:10]
    context = {"form": form, "config": config, "recent": recent}
    return render(request, "alerts/webhook.html", context, status=400 if form.errors else 200)


@never_cache
@permission_required(services.MANAGE, raise_exception=True)
@require_step_up
@require_POST
def webhook_disable_view(request: HttpRequest) -> HttpResponse:
    try:
        services.alert_webhook_disable(actor=acting_user(request), request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Alert webhook switched off. Alerts are still stored and mailed.")
    return redirect("alerts:webhook")


@never_cache
@permission_required(services.MANAGE, raise_exception=True)
@require_step_up
@require_POST
def webhook_test_view(request: HttpRequest) -> HttpResponse:
    try:
        alert = services.alert_webhook_test(actor=acting_user(request), request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Test alert #{alert.pk} raised; the control worker posts it within seconds.")
    return redirect("alerts:webhook")


@never_cache
@permission_required("accounts.view_console", raise_exception=True)
def alert_list_view(request: HttpRequest) -> HttpResponse:
    return render(request, "alerts/list.html", {"alerts": selectors.alerts_for(acting_user(request))})
