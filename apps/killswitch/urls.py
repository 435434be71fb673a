from django.urls import path

from apps.killswitch import views, webhook_views

app_name = "killswitch"
urlpatterns = [
    path("", views.kill_view, name="kill"),
    path("runs/", views.run_list_view, name="runs"),
    path("runs/<int:run_id>/", views.run_detail_view, name="run"),
    path("alerts/", views.alert_list_view, name="alerts"),
    path("resume/", views.resume_view, name="resume"),
    path("alerts/webhook/", webhook_views.webhook_view, name="webhook"),
    path("alerts/webhook/disable/", webhook_views.webhook_disable_view, name="webhook_disable"),
    path("alerts/webhook/test/", webhook_views.webhook_test_view, name="webhook_test"),
    path("breakers/", views.breakers_view, name="breakers"),
    path("breakers/<slug:kind>/", views.breaker_update_view, name="breaker_update"),
]
