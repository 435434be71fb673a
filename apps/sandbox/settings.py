"""Django settings for running the sandbox exchange alone (dev/test only).

`runsandbox` needs Django only to be a management command. The project's settings modules
cannot be used for that in a child process: `botconsole.settings.test` bootstraps Vault when it
is imported (tests/harness.py), and `local`/`production` insist on DATABASE_URL, REDIS_URL and
VAULT_ADDR. These settings name no database, cache or Vault, so the sandbox starts, and stays
up, while those servers are down.
"""

# Not a secret: nothing here signs cookies or sessions; Django only insists on a value.
SECRET_KEY = "sandbox-only-not-a-secret"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS: list[str] = []
INSTALLED_APPS = ["apps.sandbox"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "apps.core.logging.RedactingFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
