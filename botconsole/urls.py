from django.contrib import admin
from django.urls import include, path

# admin.site is apps.accounts.admin_site.ReadOnlyAdminSite: OTP-verified staff only, and read-only.

urlpatterns = [
    path("", include("apps.live.urls")),
    path("", include("apps.ops.urls")),
    path("accounts/", include("apps.accounts.urls")),
    path("exchange-accounts/", include("apps.exchanges.urls")),
    path("bots/", include("apps.bots.urls")),
    path("trades/", include("apps.trading.urls")),
    path("killswitch/", include("apps.killswitch.urls")),
    path("alerts/", include("apps.alerts.urls")),
    path("audit/", include("apps.audit.urls")),
    path("reviews/", include("apps.reviews.urls")),
    path("admin/", admin.site.urls),
]
