"""App config: discovers each installed app's daemons when Django starts."""
from __future__ import annotations

from django.apps import AppConfig


class DaemonsConfig(AppConfig):
    name = "daemons"
    verbose_name = "Daemons"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from daemons import checks, registry  # noqa: F401 - checks register themselves

        registry.autodiscover()
