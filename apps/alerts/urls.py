from django.urls import path

from apps.alerts import views

app_name = "alerts"
urlpatterns = [
    path("", views.alert_list_view, name="list"),
    path("<int:alert_id>/acknowledge/", views.alert_acknowledge_view, name="acknowledge"),
    path("acknowledge/", views.alert_acknowledge_all_view, name="acknowledge_all"),
    path("webhook/", views.webhook_view, name="webhook"),
    path("webhook/disable/", views.webhook_disable_view, name="webhook_disable"),
    path("webhook/test/", views.webhook_test_view, name="webhook_test"),
]
