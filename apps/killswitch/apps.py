from django.apps import AppConfig


class KillswitchConfig(AppConfig):
    name = "apps.killswitch"
    label = "killswitch"
