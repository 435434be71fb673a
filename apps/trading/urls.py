from django.urls import path

from apps.trading import views

app_name = "trading"
urlpatterns = [
    path("", views.fills_view, name="fills"),
    path("export.csv", views.fills_export_view, name="fills_export"),
    path("orders/", views.orders_view, name="orders"),
    path("orders/export.csv", views.orders_export_view, name="orders_export"),
]
