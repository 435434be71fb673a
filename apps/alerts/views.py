"""The alert list and acknowledgements (everyone who may see an alert); the webhook's settings page (admins,
with a fresh TOTP code)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.decorators import require_step_up
from apps.accounts.selectors import acting_user
from apps.alerts import selectors
from apps.alerts import webhook as services
from apps.alerts.forms import AlertAcknowledgeForm, AlertWebhookForm
from apps.alerts.models import ACK_NOTE_MAX, Alert
from apps.alerts.services import AlertNotFoundError, alert_acknowledge, alert_acknowledge_many
from apps.core.display import moment_text
from apps.core.exceptions import ApplicationError
from apps.core.input_validation import InputError, parse_id

VIEW = "accounts.view_console"


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


def _list_page(request: HttpRequest, *, status: int = 200, error: tuple[int | None, str] | None = None) -> HttpResponse:
    """The alert list; `error` is (alert id or None for "all shown", message) of a refused acknowledgement."""
    user = acting_user(request)
    alerts = list(selectors.alerts_for(user))
    context = {
        "alerts": alerts,
        "unacknowledged_ids": [a.pk for a in alerts if a.acknowledged_at is None],
        "error_for": error[0] if error else 0,
        "error": error[1] if error else "",
        "note_max": ACK_NOTE_MAX,
    }
    return render(request, "alerts/list.html", context, status=status)


@never_cache
@permission_required(VIEW, raise_exception=True)
def alert_list_view(request: HttpRequest) -> HttpResponse:
    return _list_page(request)


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_POST
def alert_acknowledge_view(request: HttpRequest, alert_id: int) -> HttpResponse:
    """Acknowledge one alert (anyone who may see it); a second acknowledgement keeps the first."""
    user = acting_user(request)
    if not selectors.alerts_visible(user).filter(pk=alert_id).exists():
        raise Http404("There is no such alert.")
    form = AlertAcknowledgeForm(request.POST)
    if not form.is_valid():
        return _list_page(request, status=400, error=(alert_id, str(form.errors["note"][0])))
    try:
        ack = alert_acknowledge(alert_id=alert_id, actor=user, note=form.cleaned_data["note"], request=request)
    except AlertNotFoundError:
        raise Http404("There is no such alert.") from None
    except ApplicationError as exc:
        return _list_page(request, status=400, error=(alert_id, exc.message))
    alert = ack.alert
    if ack.done:
        messages.success(request, f"Alert #{alert.pk} acknowledged.")
    else:
        who = alert.acknowledged_by.get_username() if alert.acknowledged_by else "someone"
        when = moment_text(alert.acknowledged_at) if alert.acknowledged_at else "an unknown time"
        messages.info(request, f"Alert #{alert.pk} was already acknowledged by {who} at {when}; that stays.")
    return redirect("alerts:list")


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_POST
def alert_acknowledge_all_view(request: HttpRequest) -> HttpResponse:
    """Acknowledge every alert the list showed unacknowledged (their ids come with the form)."""
    try:
        ids = [parse_id(raw, name="alert") for raw in request.POST.getlist("alert")]
    except InputError as exc:
        return _list_page(request, status=400, error=(None, f"{exc.message} Nothing was changed."))
    form = AlertAcknowledgeForm(request.POST)
    if not form.is_valid():
        return _list_page(request, status=400, error=(None, str(form.errors["note"][0])))
    try:
        done = alert_acknowledge_many(
            alert_ids=[i for i in ids if i is not None],
            actor=acting_user(request),
            note=form.cleaned_data["note"],
            request=request,
        )
    except ApplicationError as exc:
        return _list_page(request, status=400, error=(None, exc.message))
    if done:
        messages.success(request, f"{done} alert{'s' if done != 1 else ''} acknowledged.")
    else:
        messages.info(request, "Nothing to acknowledge: the alerts shown were acknowledged already.")
    return redirect("alerts:list")
