from typing import Any

from django.http import HttpRequest

from apps.core.otp import is_verified


def navigation(request: HttpRequest) -> dict[str, Any]:
    """What the page chrome needs: the role-aware menu only for a verified session."""
    user = getattr(request, "user", None)
    if user is None or not is_verified(user):
        return {"nav_verified": False, "nav_perms": {}}
    return {"nav_verified": True, "nav_perms": {"manage_users": user.has_perm("accounts.manage_users")}}
