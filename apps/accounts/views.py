from __future__ import annotations

import segno
from axes.helpers import get_lockout_response
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import permission_required
from django.contrib.auth.forms import PasswordChangeForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts import selectors, services, sessions
from apps.accounts.decorators import require_step_up, safe_next
from apps.accounts.forms import CodeForm, LoginForm, RoleForm, UserCreateForm
from apps.accounts.models import User, UserSession
from apps.audit.services import record
from apps.core.display import moment_text
from apps.core.exceptions import ApplicationError
from apps.core.otp import is_verified

SESSION_NEXT = "bc_next"


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _locked_out(request: HttpRequest, user: User) -> HttpResponse:
    credentials = {"username": user.get_username()}
    sessions.session_logout(request=request, reason="locked_out")
    response: HttpResponse = get_lockout_response(request, None, credentials)
    return response


def _code_error(result: services.OtpResult, hint: str) -> str:
    if result.outcome is services.OtpOutcome.THROTTLED and result.retry_at:
        return f"Too many attempts. Wait until {moment_text(result.retry_at)} and try again."
    return f"That code is not valid. {hint}"


# -- login --------------------------------------------------------------------------------


@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    if is_verified(request.user):
        return redirect("live:dashboard")
    form = LoginForm(request, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.get_user()
        auth_login(request, user)  # cycles the session key; the session is password-only for now
        request.session[sessions.SESSION_LOGIN_AT] = sessions.now_ts()
        request.session[sessions.SESSION_LAST_SEEN] = sessions.now_ts()
        request.session[SESSION_NEXT] = safe_next(request, request.POST.get("next"), "/")
        record(actor=user, action="login.password_ok", target=user, request=request)
        return redirect("accounts:otp" if services.confirmed_totp_device(user) else "accounts:enroll")
    return render(
        request, "accounts/login.html", {"form": form, "next": safe_next(request, request.GET.get("next"), "")}
    )


@sensitive_post_parameters("code")
@never_cache
@require_http_methods(["GET", "POST"])
def otp_view(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if is_verified(user):
        return redirect("live:dashboard")
    if services.confirmed_totp_device(user) is None:
        return redirect("accounts:enroll")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result = services.login_verify_otp(request=request, code=form.cleaned_data["code"])
        if result.outcome is services.OtpOutcome.OK:
            if result.used_backup_code:
                messages.warning(request, "You used a backup code. Generate new ones if you are running low.")
            return redirect(safe_next(request, request.session.pop(SESSION_NEXT, None), "/"))
        if result.outcome is services.OtpOutcome.LOCKED:
            return _locked_out(request, user)
        form.add_error("code", _code_error(result, "Enter the current code from your authenticator app."))
    return render(request, "accounts/otp.html", {"form": form})


@sensitive_post_parameters("code")
@never_cache
@require_http_methods(["GET", "POST"])
def enroll_view(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    if is_verified(user):
        return redirect("live:dashboard")
    if services.confirmed_totp_device(user) is not None:
        return redirect("accounts:otp")
    device = services.otp_enrollment_device(user=user)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result, codes = services.otp_confirm_enrollment(request=request, code=form.cleaned_data["code"])
        if result.outcome is services.OtpOutcome.OK:
            # Shown once, in this response only; the database keeps their hashes.
            return render(request, "accounts/backup_codes_new.html", {"codes": codes, "first": True})
        if result.outcome is services.OtpOutcome.LOCKED:
            return _locked_out(request, user)
        form.add_error("code", _code_error(result, "Check the time on your phone and try the next code."))
    qr = segno.make(device.config_url, error="m").svg_inline(scale=5, dark="#101828", omitsize=True)
    return render(
        request,
        "accounts/enroll.html",
        {"form": form, "qr_svg": qr, "secret": services.otp_secret_text(device)},
    )


@never_cache
@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    sessions.session_logout(request=request)
    return redirect("accounts:login")


# -- step-up and backup codes -----------------------------------------------------------------


@sensitive_post_parameters("code")
@never_cache
@require_http_methods(["GET", "POST"])
def step_up_view(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    next_url = safe_next(request, request.POST.get("next") or request.GET.get("next"), "/")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        result = services.step_up_verify(request=request, code=form.cleaned_data["code"])
        if result.outcome is services.OtpOutcome.OK:
            return redirect(next_url)
        if result.outcome is services.OtpOutcome.LOCKED:
            return _locked_out(request, user)
        form.add_error("code", _code_error(result, "Each code works once; wait for the next one."))
    return render(request, "accounts/step_up.html", {"form": form, "next": next_url})


@never_cache
def backup_codes_view(request: HttpRequest) -> HttpResponse:
    return render(
        request, "accounts/backup_codes.html", {"remaining": selectors.backup_codes_remaining(_user(request))}
    )


@never_cache
@require_POST
@require_step_up
def backup_codes_regenerate_view(request: HttpRequest) -> HttpResponse:
    codes = services.backup_codes_regenerate(user=_user(request), request=request)
    return render(request, "accounts/backup_codes_new.html", {"codes": codes, "first": False})


# -- own sessions and password ----------------------------------------------------------------


@never_cache
def sessions_view(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    return render(
        request,
        "accounts/sessions.html",
        {"sessions": selectors.active_sessions(user), "current_key": request.session.session_key},
    )


@never_cache
@require_POST
def session_terminate_view(request: HttpRequest, session_id: int) -> HttpResponse:
    user_session = get_object_or_404(UserSession, pk=session_id, user=_user(request), ended_at__isnull=True)
    if user_session.session_key == request.session.session_key:
        sessions.session_logout(request=request)
        return redirect("accounts:login")
    sessions.session_end(
        user_session=user_session, reason=UserSession.EndReason.TERMINATED, actor=_user(request), request=request
    )
    messages.success(request, "Session ended.")
    return redirect("accounts:sessions")


@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@never_cache
@require_http_methods(["GET", "POST"])
def password_change_view(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    form = PasswordChangeForm(user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        ended = services.user_password_changed(request=request, user=user)
        messages.success(request, f"Password changed. {ended} other session(s) ended.")
        return redirect("accounts:sessions")
    return render(request, "accounts/password_change.html", {"form": form})


# -- user administration (admin role) -----------------------------------------------------------


@never_cache
@permission_required("accounts.manage_users", raise_exception=True)
@require_http_methods(["GET", "POST"])
def users_view(request: HttpRequest) -> HttpResponse:
    form = UserCreateForm(request.POST or None)
    if request.method == "POST":
        return _user_create(request, form)
    return render(request, "accounts/users.html", _users_context(form))


def _users_context(form: UserCreateForm) -> dict[str, object]:
    return {"users": selectors.users_overview(), "form": form, "roles": selectors.role_capabilities()}


@require_step_up
def _user_create(request: HttpRequest, form: UserCreateForm) -> HttpResponse:
    if not form.is_valid():
        return render(request, "accounts/users.html", _users_context(form), status=400)
    data = form.cleaned_data
    password = services.user_create(
        username=data["username"], email=data["email"], role=data["role"], actor=_user(request), request=request
    )
    return render(request, "accounts/user_created.html", {"username": data["username"], "password": password})


@never_cache
@permission_required("accounts.manage_users", raise_exception=True)
def user_detail_view(request: HttpRequest, user_id: int) -> HttpResponse:
    target = get_object_or_404(User, pk=user_id)
    return render(request, "accounts/user_detail.html", selectors.user_detail(target) | {"role_form": RoleForm()})


USER_ACTIONS = ("role", "deactivate", "activate", "end_sessions", "unlock", "reset_otp")


@never_cache
@permission_required("accounts.manage_users", raise_exception=True)
@require_POST
@require_step_up
def user_action_view(request: HttpRequest, user_id: int, action: str) -> HttpResponse:
    if action not in USER_ACTIONS:
        raise Http404("unknown action")
    target = get_object_or_404(User, pk=user_id)
    actor = _user(request)
    try:
        if action == "role":
            form = RoleForm(request.POST)
            if not form.is_valid():
                raise ApplicationError("Choose a valid role.")
            services.user_set_role(user=target, role=form.cleaned_data["role"], actor=actor, request=request)
        elif action in ("deactivate", "activate"):
            services.user_set_active(user=target, active=action == "activate", actor=actor, request=request)
        elif action == "end_sessions":
            sessions.user_sessions_end(
                user=target,
                reason=UserSession.EndReason.TERMINATED,
                actor=actor,
                request=request,
                except_key=request.session.session_key,
            )
        elif action == "unlock":
            services.user_unlock(username=target.get_username(), actor=actor, request=request)
        elif action == "reset_otp":
            services.user_reset_otp(user=target, actor=actor, request=request)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Done.")
    return redirect("accounts:user_detail", user_id=target.pk)
