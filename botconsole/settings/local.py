"""Local development: the embedded servers started by `make run`.

The launcher writes their addresses to var/run/services.env (mode 0600), the sandbox exchange's
(SANDBOX_URL) too once it is up: a command run from another terminal, such as the shell's kill
switch (`python -m launcher.as_process control killswitch`), reaches the same servers and the same
sandbox. Any variable already set in the environment wins, so your own servers can be named instead.
"""

import os
import secrets
from pathlib import Path

import environ

_var = Path(os.environ.get("BOTCONSOLE_VAR_DIR", Path(__file__).resolve().parents[2] / "var"))
environ.Env.read_env(_var / "run" / "services.env", overwrite=False)
for _name in ("DATABASE_URL", "REDIS_URL", "VAULT_ADDR"):
    if not os.environ.get(_name):
        raise environ.ImproperlyConfigured(
            f"{_name} is not set and the embedded servers are not running: start `make run`, "
            f"or set {_name} to name your own server."
        )

_key_file = _var / "secret_key"
if not os.environ.get("SECRET_KEY"):
    if not _key_file.exists():
        _var.mkdir(parents=True, exist_ok=True)
        _fd = os.open(_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(_fd, "w") as _fh:
            _fh.write(secrets.token_urlsafe(50))
    os.environ["SECRET_KEY"] = _key_file.read_text().strip()

from .base import *  # noqa: E402,F403

# The local Binance-compatible exchange (`manage.py runsandbox`) and its demo commands: local and test runs only.
INSTALLED_APPS = [*INSTALLED_APPS, "apps.sandbox"]

# DEBUG stays as base.py sets it: off unless BOTCONSOLE_DEBUG=1.
# Nobody runs collectstatic locally: whitenoise indexes the files where the finders find them.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT = None
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
