from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.ops.health import health_check
from apps.ops.metrics import metrics_access_allowed, metrics_exposition


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
