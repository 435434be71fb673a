"""The project's URLs plus routes that exist only for tests (ROOT_URLCONF = "tests.support.urls")."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path

from botconsole.urls import urlpatterns as project_urlpatterns


def boom(request: HttpRequest) -> HttpResponse:
    """Fail the way a lost connection fails: the message and a local variable hold a URL with its password."""
    broker_url = settings.CELERY_BROKER_URL
    database = dict(settings.DATABASES["default"])
    raise ConnectionError(f"cannot reach {broker_url} nor {database['HOST']}")


urlpatterns = [path("_test/boom/", boom, name="test-boom"), *project_urlpatterns]
