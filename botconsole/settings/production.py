"""Production: every secret and address comes from the environment, with no default.

Starting without SECRET_KEY, DATABASE_URL, REDIS_URL, VAULT_ADDR or ALLOWED_HOSTS fails
with ImproperlyConfigured naming the missing variable. Every variable is described in
deploy/README.md; deploy/ has the systemd units, the nginx TLS proxy and the rest.

TLS ends at the reverse proxy (deploy/nginx/botconsole.conf), which overwrites X-Forwarded-For
and X-Forwarded-Proto. uvicorn accepts those headers only from the proxy's address
(`--forwarded-allow-ips`, see deploy/systemd/botconsole-web.service) and turns them into the
request's client address and scheme, so REMOTE_ADDR is the real client. apps.core.net.client_ip
reads only that, for django-axes, the audit log, the sessions and the new-address mail alike, and
nothing here reads a forwarded header: a client cannot choose the address that is locked out or
recorded.
"""

from pathlib import Path

from .base import *  # noqa: F403
from .base import env

DEBUG = False
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[f"https://{h}" for h in ALLOWED_HOSTS])

# Where `collectstatic` puts the files that the proxy serves (deploy/nginx/botconsole.conf).
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(VAR_DIR / "static")))

# uvicorn has already put the proxy's X-Forwarded-Proto into the request's scheme; this makes
# Django agree when the header is the only sign of HTTPS.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# The proxy answers plain HTTP with a redirect itself; this catches a request that reached the
# app another way. /healthz is for local probes (systemd, compose) that speak plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=63072000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
# __Host- cookies are bound to this exact host, over HTTPS, for path /.
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_NAME = "__Host-sessionid"
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_NAME = "__Host-csrftoken"

EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
