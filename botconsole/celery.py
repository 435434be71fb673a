"""The Celery application: JSON messages only, tasks on the `control` queue by default."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "botconsole.settings.local")

app = Celery("botconsole")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
