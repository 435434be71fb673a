from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A console user. Users are deactivated, never deleted: the audit log refers to them."""

    class Meta:
        db_table = "accounts_user"
