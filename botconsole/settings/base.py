"""Settings shared by every environment. Values come from the environment (django-environ).

DATABASE_URL, REDIS_URL and VAULT_ADDR have no default here: `local` and `test` fill them in
from the embedded servers, `production` requires them.
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONCE, NONE, SELF

BASE_DIR = Path(__file__).resolve().parents[2]
env = environ.Env()

VAR_DIR = Path(env("BOTCONSOLE_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env("SECRET_KEY")
# Debug pages show settings, source and every URL: only ever on an explicit opt-in. A plain DEBUG
# variable (which shells and other tools set for their own reasons) is not read.
DEBUG = env.bool("BOTCONSOLE_DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    # django.contrib.admin, with a read-only admin site behind OTP (apps.accounts.admin_site).
    "apps.accounts.admin_apps.ReadOnlyAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "csp",
    "apps.core",
    "apps.accounts",
    "apps.events",
    "apps.alerts",
    "apps.audit",
    "apps.vault",
    "apps.exchanges",
    "apps.strategies",
    "apps.bots",
    "apps.trading",
    "apps.killswitch",
    "apps.live",
    "apps.reviews",
    "apps.ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (whitenoise), answered before sessions or the database are touched: make run has no nginx.
    "apps.core.middleware.StaticFilesMiddleware",
    "apps.core.middleware.NoStoreMiddleware",
    "csp.middleware.CSPMiddleware",
    "apps.core.middleware.PermissionsPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # After OTP: the audit log reads the acting person's verification and address from the request.
    "apps.audit.context.AuditContextMiddleware",
    "apps.accounts.middleware.SessionPolicyMiddleware",
    "apps.accounts.middleware.RequireVerifiedMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout flagged during the request into the 429 page.
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    # Refuses to authenticate a locked-out username + IP before the password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "botconsole.urls"
ASGI_APPLICATION = "botconsole.asgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "live:dashboard"
LOGOUT_REDIRECT_URL = "accounts:login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
                "apps.live.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT: Path | None = VAR_DIR / "static"
# whitenoise serves the files it indexed at startup and looks nothing up on the filesystem per
# request, so a path like /static/..%2f..%2fmanage.py or one with a NUL is simply not found (404).
WHITENOISE_AUTOREFRESH = False
# Only the console's own pages load its files: no Access-Control-Allow-Origin: * on them.
WHITENOISE_ALLOW_ALL_ORIGINS = False

# Error pages: templates/{400,403,404,500}.html and this view for a CSRF refusal. With DEBUG on,
# Django's technical pages instead, with every credential masked (apps.core.debug).
CSRF_FAILURE_VIEW = "apps.core.views.csrf_failure"
DEFAULT_EXCEPTION_REPORTER = "apps.core.debug.MaskingExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "apps.core.debug.CredentialMaskingFilter"

# Broker and channel layer: one Redis/Valkey.
REDIS_URL = env("REDIS_URL")
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# JSON only: a pickle payload from the broker could run code in a worker.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_EVENT_SERIALIZER = "json"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "control"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Reconnects after losing the broker where celery's own consumer would exit (see the class).
CELERY_WORKER_CONSUMER = "apps.core.workers:BrokerLossConsumer"
CELERY_TIMEZONE = "UTC"
# Celery's Django fixup closes the database connection around every task: a bot worker then opened a new one
# (a new PostgreSQL backend and a SCRAM login) at every tick. With this, it closes them only every so many
# tasks, and apps.core.workers closes them around each task the way Django does around a request: when broken
# or older than CONN_MAX_AGE (health-checked before reuse).
CELERY_DB_REUSE_MAX = 100_000
# Reviews: the control worker snapshots every exchange account's balances at this UTC time, "HH:MM"
# (cron fields work too: "*/6:00" is every six hours).
REVIEW_BALANCES_AT = env("REVIEW_BALANCES_AT", default="00:00")
CELERY_BEAT_SCHEDULE = {
    "audit-verify-chain": {
        "task": "apps.audit.tasks.audit_verify_task",
        "schedule": env.float("AUDIT_VERIFY_EVERY_S", default=3600.0),
        "options": {"queue": "control"},
    },
    "audit-checkpoint": {
        "task": "apps.audit.tasks.audit_checkpoint_task",
        "schedule": env.float("AUDIT_CHECKPOINT_EVERY_S", default=600.0),
        "options": {"queue": "control"},
    },
    "exchange-key-hygiene": {
        "task": "apps.exchanges.tasks.key_hygiene_task",
        "schedule": env.float("KEY_HYGIENE_EVERY_S", default=86400.0),
        "options": {"queue": "control"},
    },
    "bot-log-purge": {
        "task": "apps.trading.tasks.bot_log_purge_task",
        "schedule": env.float("BOT_LOG_PURGE_EVERY_S", default=3600.0),
        "options": {"queue": "control"},
    },
    "review-balance-snapshot": {
        "task": "apps.reviews.tasks.balance_snapshot_task",
        "schedule": crontab(hour=REVIEW_BALANCES_AT.partition(":")[0], minute=REVIEW_BALANCES_AT.partition(":")[2]),
        "options": {"queue": "control"},
    },
}

# Bot logs: each bot worker stores its (redacted) log lines at BOT_LOG_LEVEL and above in the database
# (apps.trading.logs), shown on the bot page; the control worker deletes lines older than BOT_LOG_RETENTION_DAYS.
# A record must pass LOG_LEVEL (the loggers' level) first: the stored level is the higher of the two.
BOT_LOG_LEVEL = env("BOT_LOG_LEVEL", default="INFO").upper()
BOT_LOG_RETENTION_DAYS = env.int("BOT_LOG_RETENTION_DAYS", default=7)
if BOT_LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise environ.ImproperlyConfigured("BOT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
if BOT_LOG_RETENTION_DAYS < 1:
    raise environ.ImproperlyConfigured("BOT_LOG_RETENTION_DAYS must be at least 1")

# The fleet supervisor on this machine runs the bots whose host label is this (see apps/bots/fleet.py).
FLEET_HOST_LABEL = env("FLEET_HOST_LABEL", default="local")
# How the fleet starts a bot worker: "fork" (the default: forked from a preloaded template process that holds no
# token, secret or database connection; apps/bots/zygote.py) or "spawn" (a fresh `celery worker` process).
FLEET_WORKER_MODE = env("FLEET_WORKER_MODE", default="fork")
# Bot workers run this much nicer than their supervisor (0-19): when a fleet asks more CPU than the machine has,
# the web pages, the control worker (the kill) and the servers are served first and the ticks wait.
FLEET_WORKER_NICE = env.int("FLEET_WORKER_NICE", default=10)
if not 0 <= FLEET_WORKER_NICE <= 19:
    raise environ.ImproperlyConfigured("FLEET_WORKER_NICE must be between 0 and 19")

# The control worker checks the circuit breakers (apps.killswitch.breakers) this often.
BREAKERS_EVERY_S = env.float("BREAKERS_EVERY_S", default=5.0)

# Signed audit checkpoints are also appended to this file, outside the database, so that rolling
# the database back shows (apps.audit.checkpoints). Best on storage the database's admins cannot rewrite.
AUDIT_CHECKPOINT_FILE = Path(env("AUDIT_CHECKPOINT_FILE", default=str(VAR_DIR / "audit" / "checkpoints.jsonl")))

# /metrics answers a local scraper, or one presenting `Authorization: Bearer <token>` whose SHA-256
# (hex) is this; the token itself is never stored here. Empty: loopback only.
METRICS_TOKEN_SHA256 = env("METRICS_TOKEN_SHA256", default="").strip().lower()
if METRICS_TOKEN_SHA256 and (len(METRICS_TOKEN_SHA256) != 64 or set(METRICS_TOKEN_SHA256) - set("0123456789abcdef")):
    raise environ.ImproperlyConfigured("METRICS_TOKEN_SHA256 must be a SHA-256 in hex (64 characters)")

# Every LIVE_RECHECK_S seconds an open websocket re-checks its session, user and OTP verification.
LIVE_RECHECK_S = env.int("LIVE_RECHECK_S", default=30)

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # A busy dashboard socket may fall behind for a moment; past `capacity` unread messages
        # channels_redis drops them silently (catch-up repairs that only on reconnect).
        # redis-py 8 reads with a 5 s socket timeout by default, which aborts channels_redis's blocking
        # receive (also 5 s) on every idle socket; allow the blocking read to finish.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}], "capacity": 2000, "expiry": 60},
    },
}

# Vault/OpenBao. Each process gets its own least-privileged credentials: a token, or an
# AppRole role id + secret id. Never the root token.
VAULT_ADDR = env("VAULT_ADDR")
VAULT_TOKEN = env("VAULT_TOKEN", default="")
VAULT_ROLE_ID = env("VAULT_ROLE_ID", default="")
VAULT_SECRET_ID = env("VAULT_SECRET_ID", default="")

# -- Login, OTP, lockout, sessions ----------------------------------------------------------
OTP_TOTP_ISSUER = "botconsole"
# The admin never shows a device's key or QR code (the admin is read-only anyway).
OTP_ADMIN_HIDE_SENSITIVE_DATA = True
OTP_TOTP_THROTTLE_FACTOR = 1  # django-otp waits 1, 2, 4, 8 ... s after successive failures
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The one client address (apps.core.net): the one the audit log, the sessions and the mails use.
AXES_CLIENT_IP_CALLABLE = "apps.core.net.client_ip"
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
# Reset only after the OTP step succeeds (apps.accounts.services): resetting at the password
# step would give whoever holds the password unlimited rounds of OTP guesses.
AXES_RESET_ON_SUCCESS = False
AXES_SENSITIVE_PARAMETERS = ["password", "code"]
AXES_VERBOSE = False
# The username axes stores, cleaned and cut to the column whatever a login form was sent.
AXES_USERNAME_CALLABLE = "apps.accounts.forms.axes_username"
SESSION_IDLE_TIMEOUT = timedelta(minutes=env.int("SESSION_IDLE_MINUTES", default=30))
SESSION_ABSOLUTE_TIMEOUT = timedelta(hours=env.int("SESSION_ABSOLUTE_HOURS", default=12))
SESSION_COOKIE_AGE = int(SESSION_ABSOLUTE_TIMEOUT.total_seconds())
STEP_UP_TTL = timedelta(minutes=5)
BACKUP_CODE_COUNT = 10

# -- Exchanges ----------------------------------------------------------------------------------
# The local sandbox exchange (`manage.py runsandbox`); accounts of exchange "sandbox" talk to it.
SANDBOX_URL = env("SANDBOX_URL", default="")
EXCHANGE_KEY_MAX_AGE_DAYS = env.int("EXCHANGE_KEY_MAX_AGE_DAYS", default=90)
EXCHANGE_TIMEOUT_MS = env.int("EXCHANGE_TIMEOUT_MS", default=10000)
EXCHANGE_RETRIES = env.int("EXCHANGE_RETRIES", default=3)
# After a 429 the port waits the exchange's Retry-After before asking again, but never longer than this per retry.
EXCHANGE_RETRY_AFTER_MAX_S = env.float("EXCHANGE_RETRY_AFTER_MAX_S", default=10.0)
# The kill asks an account's exchange that is unavailable (429, 5xx, timeouts, not reached; each call already
# retried by the port) to list and cancel again for this long from the account's first failure, then reports
# the account not done (its open orders unknown).
KILL_CANCEL_PATIENCE_S = env.float("KILL_CANCEL_PATIENCE_S", default=10.0)
# Dead-man's switch: a live bot's worker sets the exchange's cancel-all countdown to DEADMAN_TIMEOUT_S
# every DEADMAN_REFRESH_S; if the console dies, the exchange cancels the open orders itself.
DEADMAN_REFRESH_S = env.float("DEADMAN_REFRESH_S", default=15.0)
DEADMAN_TIMEOUT_S = env.float("DEADMAN_TIMEOUT_S", default=60.0)
if not 0 < DEADMAN_REFRESH_S < DEADMAN_TIMEOUT_S:
    raise environ.ImproperlyConfigured(
        f"DEADMAN_TIMEOUT_S ({DEADMAN_TIMEOUT_S:g}) must be greater than DEADMAN_REFRESH_S ({DEADMAN_REFRESH_S:g}), "
        "and both positive: a countdown that runs out before it is refreshed cancels the bots' orders."
    )

# -- Headers and cookies -------------------------------------------------------------------
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), publickey-credentials-get=(), usb=()"
)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="botconsole@localhost")

LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "apps.core.logging.RedactingFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        # Every handler carries the redaction filter: it is the last line before a secret
        # would reach a log file.
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "celery": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}
