from django.urls import path

from apps.bots import views
from apps.trading import views as trading_views

app_name = "bots"
urlpatterns = [
    path("", views.bot_list_view, name="list"),
    path("new/", views.bot_create_view, name="create"),
    path("market/", views.bot_market_view, name="market"),
    path("fleet/", views.bot_fleet_action_view, name="fleet_action"),
    path("<int:bot_id>/", views.bot_detail_view, name="detail"),
    path("<int:bot_id>/edit/", views.bot_edit_view, name="edit"),
    path("<int:bot_id>/live/", views.bot_go_live_view, name="go_live"),
    path("<int:bot_id>/flatten-on-kill/", views.bot_flatten_on_kill_view, name="flatten_on_kill"),
    path("<int:bot_id>/halt/clear/", views.bot_halt_clear_view, name="halt_clear"),
    path("<int:bot_id>/chart/", trading_views.bot_chart_view, name="chart"),
    path("<int:bot_id>/archive/", views.bot_archive_view, name="archive"),
    path("<int:bot_id>/unarchive/", views.bot_unarchive_view, name="unarchive"),
    path("<int:bot_id>/<slug:action>/", views.bot_action_view, name="action"),
]
