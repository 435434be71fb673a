from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers
from whitenoise.middleware import WhiteNoiseMiddleware


class PermissionsPolicyMiddleware:
    """Send Permissions-Policy (Django has no setting for it): the console needs no device APIs."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        return response


class NoStoreMiddleware:
    """Every page the application renders says `Cache-Control: no-store` (and private, no-cache).

    A signed-in user's pages hold balances, keys' metadata and the audit log; neither the browser's
    disk cache nor a shared cache may keep them after logout. Static files never get here
    (whitenoise answers them above this middleware), so they stay cacheable.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        add_never_cache_headers(response)
        return response


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    step = sync_to_async(lambda: next(chunks, None))
    while (chunk := await step()) is not None:
        yield chunk


class StaticFilesMiddleware(WhiteNoiseMiddleware):  # type: ignore[misc]
    """whitenoise, whose file responses stream asynchronously under ASGI.

    Django reads a synchronous file iterator under ASGI only with a warning, printed by every web
    process of `make run` at its first static file; the file is read the same way either way.
    """

    def serve(self, static_file: Any, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = super().serve(static_file, request)
        if isinstance(request, ASGIRequest) and response.streaming:
            chunks = iter(response.streaming_content)  # type: ignore[attr-defined]
            response.streaming_content = _async_chunks(chunks)  # type: ignore[attr-defined]
        return response
