from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the site's own page; Django's says which check failed and, under DEBUG, more."""
    return render(request, "403_csrf.html", status=403)
