"""ASGI entry point for the web process: Django for HTTP, Channels for the live websocket."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botconsole.settings.local")
# Set up Django (apps, settings) before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.live.middleware import OTPVerifiedMiddleware, SameOriginMiddleware  # noqa: E402
from apps.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Static files too: whitenoise's middleware serves them, with or without DEBUG.
        "http": django_asgi_app,
        # Outermost first: a foreign Origin (cross-site websocket hijacking) is refused before the
        # session is even read; then only an OTP-verified session reaches the router.
        "websocket": SameOriginMiddleware(AuthMiddlewareStack(OTPVerifiedMiddleware(URLRouter(websocket_urlpatterns)))),
    }
)
