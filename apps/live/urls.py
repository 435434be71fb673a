from django.urls import path

from apps.live import views
from apps.trading import views as trading_views

app_name = "live"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("live/events/", views.events, name="events"),
    path("live/chart/", trading_views.fleet_chart_view, name="chart"),
]
