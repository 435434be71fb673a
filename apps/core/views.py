from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.accounts.models import User
from apps.core import selectors
from apps.core.health import health_check
from apps.core.metrics import metrics_access_allowed, metrics_exposition


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = health_check()
    down = sorted(name for name, state in checks.items() if state != "ok")
    body = {"status": "ok" if not down else "down", "down": down, "checks": checks}
    return JsonResponse(body, status=200 if not down else 503)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    # Open to no session (the OTP middleware lets it through): a local scraper or a bearer token.
    if not metrics_access_allowed(request):
        return HttpResponseForbidden()
    body, content_type = metrics_exposition()
    return HttpResponse(body, content_type=content_type)


@permission_required("accounts.view_console", raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    return render(request, "core/dashboard.html", selectors.dashboard(request.user))


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the site's own page; Django's says which check failed and, under DEBUG, more."""
    return render(request, "403_csrf.html", status=403)
