from django.apps import AppConfig


class KillswitchConfig(AppConfig):
    name = "apps.killswitch"
    label = "killswitch"

    def ready(self) -> None:
        # The circuit-breaker loop starts with the control worker (a worker_ready receiver).
        from apps.bots import fleet  # late: once models are loaded
        from apps.killswitch import breakers  # noqa: F401  # late: its worker_ready receiver, once models are loaded
        from apps.killswitch.selectors import kill_cancels_out  # late: once models are loaded

        # The fleet supervisor (a layer below) does its bookkeeping of killed workers once a kill's cancels are out.
        fleet.kill_cancels_out = kill_cancels_out
