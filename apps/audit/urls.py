from django.urls import path

from apps.audit import views

app_name = "audit"
urlpatterns = [
    path("", views.entry_list_view, name="list"),
    path("<int:seq>/", views.entry_detail_view, name="detail"),
    path("export.<str:fmt>", views.export_view, name="export"),
    path("checkpoint/", views.checkpoint_request_view, name="checkpoint"),
]
