from typing import Any

from django.core.management.base import BaseCommand

from apps.accounts.services import user_create_first_admin


class Command(BaseCommand):
    help = "On a fresh database, create the first admin and print its one-time password."

    def handle(self, *args: Any, **options: Any) -> None:
        created = user_create_first_admin()
        if created is None:
            self.stdout.write("users exist; no admin created")
            return
        user, password = created
        # Printed once on the operator's terminal; it is never logged or stored in clear.
        self.stdout.write(f"FIRST-RUN LOGIN username={user.username} password={password}")
