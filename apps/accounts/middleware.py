"""Session policy (idle and absolute timeouts) and the OTP-verified requirement."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import Resolver404, resolve, reverse

from apps.accounts import services, sessions
from apps.accounts.models import User
from apps.core.otp import is_verified

# The only views reachable without an OTP-verified session. /metrics checks its own access
# (a local scraper or a bearer token; apps.ops.metrics).
OPEN_VIEWS = frozenset({"accounts:login", "ops:healthz", "ops:metrics"})
# Reachable with a password-only session, to finish logging in (or to leave).
PASSWORD_ONLY_VIEWS = frozenset({"accounts:otp", "accounts:enroll", "accounts:logout"})


def view_name(request: HttpRequest) -> str | None:
    try:
        return resolve(request.path_info).view_name
    except Resolver404:
        return None


class SessionPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.user.is_authenticated:
            reason = sessions.session_expiry_reason(request.session)
            if reason is not None:
                sessions.session_logout(request=request, reason=reason)
                messages.info(request, "Your session ended; please log in again.")
                return HttpResponseRedirect(reverse(settings.LOGIN_URL))
            sessions.session_touch(request=request)
        return self.get_response(request)


class RequireVerifiedMiddleware:
    """Every page but login, OTP, enrollment, health and static files needs an OTP-verified session.

    Enforced here, for every URL, so a new view cannot forget it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith("/" + settings.STATIC_URL.lstrip("/")):
            return self.get_response(request)
        name = view_name(request)
        if name in OPEN_VIEWS:
            return self.get_response(request)
        user = request.user
        if not user.is_authenticated:
            return HttpResponseRedirect(f"{reverse(settings.LOGIN_URL)}?{urlencode({'next': request.get_full_path()})}")
        if is_verified(user):
            return self.get_response(request)
        if name in PASSWORD_ONLY_VIEWS:
            return self.get_response(request)
        assert isinstance(user, User)
        has_device = services.confirmed_totp_device(user) is not None
        return HttpResponseRedirect(reverse("accounts:otp" if has_device else "accounts:enroll"))
