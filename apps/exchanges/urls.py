from django.urls import path

from apps.exchanges import views

app_name = "exchanges"
urlpatterns = [
    path("", views.account_list_view, name="list"),
    path("add/", views.account_add_view, name="add"),
    path("<uuid:account_id>/rotate/", views.account_rotate_view, name="rotate"),
    path("<uuid:account_id>/check/", views.account_check_view, name="check"),
    path("<uuid:account_id>/delete/", views.account_delete_view, name="delete"),
]
