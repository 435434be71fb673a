from django.apps import AppConfig


class KillswitchConfig(AppConfig):
    name = "apps.killswitch"
    label = "killswitch"

    def ready(self) -> None:
        # The circuit-breaker loop starts with the control worker (a worker_ready receiver).
        from apps.killswitch import breakers  # noqa: F401  # late: its worker_ready receiver, once models are loaded
