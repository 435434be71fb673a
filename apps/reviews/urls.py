from django.urls import path

from apps.reviews import views

app_name = "reviews"
urlpatterns = [
    path("", views.review_list_view, name="list"),
    path("<str:kind>/<str:key>/", views.review_view, name="review"),
    path("<str:kind>/<str:key>/export.<str:fmt>", views.export_view, name="export"),
    path("<str:kind>/<str:key>/signoff/", views.signoff_view, name="signoff"),
    path("<str:kind>/<str:key>/balances/", views.balance_check_view, name="balances"),
]
