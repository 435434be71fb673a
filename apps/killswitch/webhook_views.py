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
from apps.accounts.models import User
from apps.core.exceptions import ApplicationError
from apps.killswitch import webhook_services as services
from apps.killswitch.forms import AlertWebhookForm
from apps.killswitch.models import Alert


def _actor(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@sensitive_post_parameters("secret")
@never_cache
@permission_required(services.MANAGE, raise_exception=True)
@require_step_up
@require_http_methods(["GET", "POST"])
def webhook_view(request: HttpRequest) -> HttpResponse:
    config = services.alert_webhook_get()
    form = AlertWebhookForm(request.POST or None, initial={"url": config.url})
    if request.method == "POST" and form.is_valid():
        try:
            services.alert_webhook_configure(
                url=form.cleaned_data["url"], secret=form.cleaned_data["secret"], actor=_actor(request),
                request=request,
            )  # fmt: skip
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Alert webhook saved and switched on.")
            return redirect("killswitch:webhook")
    recent = Alert.objects.exclude(webhook_status=Alert.WebhookStatus.NONE)[:10]
    context = {"form": form, "config": config, "recent": recent}
    return render(request, "killswitch/webhook.html", context, status=400 if form.errors else 200)


@never_cache
@permission_required(services.MANAGE, raise_exception=True)
@require_step_up
@require_POST
def webhook_disable_view(request: HttpRequest) -> HttpResponse:
    try:
        services.alert_webhook_disable(actor=_actor(request), request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Alert webhook switched off. Alerts are still stored and mailed.")
    return redirect("killswitch:webhook")


@never_cache
@permission_required(services.MANAGE, raise_exception=True)
@require_step_up
@require_POST
def webhook_test_view(request: HttpRequest) -> HttpResponse:
    try:
        alert = services.alert_webhook_test(actor=_actor(request), request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Test alert #{alert.pk} raised; the control worker posts it within seconds.")
    return redirect("killswitch:webhook")
