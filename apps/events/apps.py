from django.apps import AppConfig


class EventsConfig(AppConfig):
    """The live event store: one row per thing the dashboard shows, published after commit."""

    name = "apps.events"
    label = "events"
