from django.urls import path

from apps.live import views

app_name = "live"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("live/events/", views.events, name="events"),
]
