from django.urls import path

from apps.accounts import views

app_name = "accounts"
urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("otp/", views.otp_view, name="otp"),
    path("enroll/", views.enroll_view, name="enroll"),
    path("logout/", views.logout_view, name="logout"),
    path("step-up/", views.step_up_view, name="step_up"),
    path("backup-codes/", views.backup_codes_view, name="backup_codes"),
    path("backup-codes/regenerate/", views.backup_codes_regenerate_view, name="backup_codes_regenerate"),
    path("sessions/", views.sessions_view, name="sessions"),
    path("sessions/<int:session_id>/end/", views.session_terminate_view, name="session_terminate"),
    path("password/", views.password_change_view, name="password_change"),
    path("users/", views.users_view, name="users"),
    path("users/<int:user_id>/", views.user_detail_view, name="user_detail"),
    path("users/<int:user_id>/<slug:action>/", views.user_action_view, name="user_action"),
]
