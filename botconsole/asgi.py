"""ASGI entry point for the web process (Django HTTP; Channels websockets join here)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botconsole.settings.local")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

http_app = django_asgi_app
if settings.DEBUG:
    # Local runs serve static files from the app server; production's nginx serves them.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)

application = ProtocolTypeRouter({"http": http_app})
