from django.urls import path

from apps.killswitch import views

app_name = "killswitch"
urlpatterns = [
    path("", views.kill_view, name="kill"),
    path("runs/", views.run_list_view, name="runs"),
    path("runs/<int:run_id>/", views.run_detail_view, name="run"),
    path("runs/<int:run_id>/state/", views.run_state_view, name="run_state"),
    path("resume/", views.resume_view, name="resume"),
    path("breakers/", views.breakers_view, name="breakers"),
    path("breakers/<slug:kind>/", views.breaker_update_view, name="breaker_update"),
]
