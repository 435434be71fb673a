from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.accounts.models import User
from apps.core import selectors
from apps.core.health import health_check


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = health_check()
    down = sorted(name for name, state in checks.items() if state != "ok")
    body = {"status": "ok" if not down else "down", "down": down, "checks": checks}
    return JsonResponse(body, status=200 if not down else 503)


@permission_required("accounts.view_console", raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    return render(request, "core/dashboard.html", selectors.dashboard(request.user))
