from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.selectors import acting_user
from apps.core.exceptions import ApplicationError
from apps.reviews import selectors
from apps.reviews.exports import review_csv, review_json
from apps.reviews.figures import when
from apps.reviews.forms import SignoffForm
from apps.reviews.periods import Period, PeriodError, period_from_text, period_parse, recent_periods
from apps.reviews.services import review_export_record, review_sign_off
from apps.reviews.tasks import balance_check_request

VIEW = "accounts.view_console"
# Reviewers are operators and admins (the roles that run bots); viewers read reviews only.
REVIEW = "accounts.operate_bots"
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
RECENT_DAYS, RECENT_MONTHS = 14, 12
TIME_COLUMNS = {"at", "first", "last", "cleared_at"}
# The unusual events as the page shows them: (section, title, what it means, [(column, header)]).
EVENT_SECTIONS = (
    (
        "gate_refusals",
        "Gate refusals",
        "Orders the order gate refused, by bot and reason.",
        [("bot", "Bot"), ("reason_label", "Reason"), ("count", "Refused"), ("first", "First"), ("last", "Last")],
    ),
    (
        "breakers",
        "Circuit breakers",
        "Breaker trips, and bots the order gate halted.",
        [
            ("at", "When"),
            ("source", "Breaker"),
            ("subject", "Subject"),
            ("action", "Action"),
            ("message", "Message"),
            ("cleared_at", "Cleared"),
        ],
    ),
    (
        "foreign_orders",
        "Foreign orders",
        "Open orders on an account that the console did not place.",
        [
            ("at", "When"),
            ("account", "Account"),
            ("symbol", "Symbol"),
            ("side", "Side"),
            ("amount", "Amount"),
            ("price", "Price"),
            ("exchange_order_id", "Exchange order"),
        ],
    ),
    (
        "kills",
        "Kills",
        "Presses of the kill switch (and per-bot emergency stops).",
        [
            ("at", "When"),
            ("scope", "Scope"),
            ("bot", "Bot"),
            ("reason", "Reason"),
            ("requested_by", "By"),
            ("status", "Status"),
            ("cancelled", "Cancelled"),
            ("still_open", "Still open"),
        ],
    ),
    (
        "new_ip_logins",
        "Logins from new IP addresses",
        "Successful logins from an address the user had not used.",
        [("at", "When"), ("user", "User"), ("ip", "IP address")],
    ),
    (
        "failed_logins",
        "Failed logins",
        "Wrong passwords, wrong codes and failed step-ups, by username.",
        [
            ("username", "Username"),
            ("action", "Kind"),
            ("count", "Failures"),
            ("addresses", "Addresses"),
            ("first", "First"),
            ("last", "Last"),
        ],
    ),
    (
        "lockouts",
        "Lockouts",
        "Usernames locked after repeated failures.",
        [("at", "When"), ("username", "Username"), ("ip", "IP address")],
    ),
    (
        "key_check_failures",
        "Key check failures",
        "Exchange keys that failed their check.",
        [("at", "When"), ("account", "Account"), ("message", "Problem")],
    ),
    (
        "deadman_failures",
        "Dead-man's switch failures",
        "Live bots that could not arm the exchange's countdown.",
        [("at", "When"), ("severity", "Severity"), ("message", "Message")],
    ),
    (
        "other_alerts",
        "Other alerts",
        "Every other alert of the period.",
        [("at", "When"), ("kind", "Kind"), ("severity", "Severity"), ("message", "Message")],
    ),
)


def _bad_period(request: HttpRequest, exc: PeriodError) -> HttpResponse:
    return render(request, "reviews/bad_period.html", {"error": exc.message}, status=exc.status)


def _period(kind: str, key: str) -> Period:
    return period_parse(kind=kind, key=key, now=timezone.now())


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def review_list_view(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    if "period" in request.GET:  # "open a review" by typing a day or a month
        try:
            period = period_from_text(request.GET["period"], now=now)
        except PeriodError as exc:
            return _bad_period(request, exc)
        return redirect("reviews:review", kind=period.kind, key=period.key)
    days, months = recent_periods(now=now, days=RECENT_DAYS, months=RECENT_MONTHS)
    signed = selectors.latest_signoffs([*days, *months])
    context = {
        "days": [(p, signed.get((p.kind, p.key)), p.is_over(now)) for p in days],
        "months": [(p, signed.get((p.kind, p.key)), p.is_over(now)) for p in months],
        "snapshot_at": settings.REVIEW_BALANCES_AT,
    }
    return render(request, "reviews/list.html", context)


def _event_sections(data: dict[str, Any], links: dict[str, str]) -> list[dict[str, Any]]:
    sections = []
    for name, title, about, columns in EVENT_SECTIONS:
        rows = data["events"][name]
        sections.append(
            {
                "name": name,
                "title": title,
                "about": about,
                "link": links[name],
                "headers": [h for _, h in columns],
                "rows": [[(row[c], c in TIME_COLUMNS) for c, _ in columns] for row in rows],
            }
        )
    return sections


def _page(request: HttpRequest, period: Period, form: SignoffForm | None = None, status: int = 200) -> HttpResponse:
    data = selectors.review_build(period)
    digest = selectors.review_digest(data)
    signoffs = selectors.signoffs_for(period, digest)
    now = timezone.now()
    following = period.following()
    links = selectors.audit_links(period)
    events = _event_sections(data, links)
    context: dict[str, Any] = {
        "period": period,
        "data": data,
        "digest": digest,
        "signoffs": signoffs,
        "latest": signoffs[0] if signoffs else None,
        "in_progress": not period.is_over(now),
        "previous": period.previous(),
        "following": following if following.start <= now else None,
        "links": links,
        "events": [e for e in events if e["rows"]],
        "quiet": [e for e in events if not e["rows"]],
        "event_count": sum(len(rows) for rows in data["events"].values()),
        "can_review": request.user.has_perm(REVIEW),
        "form": form or SignoffForm(),  # its digest field is this page's digest (see the template)
    }
    return render(request, "reviews/review.html", context, status=status)


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def review_view(request: HttpRequest, kind: str, key: str) -> HttpResponse:
    try:
        period = _period(kind, key)
    except PeriodError as exc:
        return _bad_period(request, exc)
    return _page(request, period)


@never_cache
@permission_required(VIEW, raise_exception=True)
@require_GET
def export_view(request: HttpRequest, kind: str, key: str, fmt: str) -> HttpResponse:
    if fmt not in EXPORT_TYPES:
        raise Http404("Unknown export format.")
    try:
        period = _period(kind, key)
    except PeriodError as exc:
        return _bad_period(request, exc)
    data = selectors.review_build(period)
    digest = selectors.review_digest(data)
    review_export_record(actor=acting_user(request), period=period, fmt=fmt, digest=digest, request=request)
    if fmt == "csv":
        body = review_csv(data, digest)
    else:
        stamp = when(timezone.now()) or ""
        body = review_json(data, digest, selectors.signoffs_for(period, digest), stamp)
    response = HttpResponse(body, content_type=EXPORT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="review-{period.kind}-{period.key}.{fmt}"'
    return response


@never_cache
@permission_required(REVIEW, raise_exception=True)
@require_POST
def signoff_view(request: HttpRequest, kind: str, key: str) -> HttpResponse:
    try:
        period = _period(kind, key)
    except PeriodError as exc:
        return _bad_period(request, exc)
    form = SignoffForm(request.POST)
    if not form.is_valid():
        return _page(request, period, form=form, status=400)
    try:
        review_sign_off(
            actor=acting_user(request),
            period=period,
            seen_digest=form.cleaned_data["digest"],
            note=form.cleaned_data["note"],
            request=request,
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Review of {period.label} marked done.")
    return redirect("reviews:review", kind=period.kind, key=period.key)


@never_cache
@permission_required(REVIEW, raise_exception=True)
@require_POST
def balance_check_view(request: HttpRequest, kind: str, key: str) -> HttpResponse:
    try:
        period = _period(kind, key)
    except PeriodError as exc:
        return _bad_period(request, exc)
    try:
        balance_check_request(actor=acting_user(request), period=period, request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Balance check requested: the control worker reads every account in a moment.")
    return redirect("reviews:review", kind=period.kind, key=period.key)
