"""`manage.py daemonshell NAME`: Django's shell with the daemon constructed and its logging on."""
from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django.core.management.commands.shell import Command as ShellCommand
from django.utils import timezone

from daemons.daemon import Daemon, TickResult
from daemons.process import logs

from ._base import DaemonCommandMixin


class Command(DaemonCommandMixin, ShellCommand):
    help = ("Open Django's shell with `daemon` (the daemon object) and `tick()` (one tick now, for real, "
            "logging to the terminal; the first one calls setup()). Takes the shell's options, e.g. -c CODE.")

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_name_argument(parser)
        self.add_instance_argument(parser)
        super().add_arguments(parser)

    def handle(self, **options: Any) -> None:
        name: str = options.pop("name")
        instance: int = options.pop("instance")
        daemon_cls = self.daemon_class(name)
        # The daemon's own log format on stderr, so a tick typed here reads like the real one.
        logs.configure(name, None)
        self.daemon: Daemon = daemon_cls(instance)
        return super().handle(**options)

    def get_namespace(self, **options: Any) -> dict[str, Any]:
        daemon = self.daemon
        set_up = False

        def tick() -> TickResult:
            """Run one tick of `daemon` now, as the runner would: setup() before the first one."""
            nonlocal set_up
            if not set_up:
                daemon.setup()
                set_up = True
            return daemon.tick(timezone.now()) or TickResult()

        namespace = super().get_namespace(**options)
        namespace.update(daemon=daemon, tick=tick, now=timezone.now)
        if not options.get("command") and options.get("verbosity", 1) > 0:
            self.stdout.write(f"daemon = {type(daemon).__name__}(instance={daemon.instance}); "
                              "tick() runs one tick now; daemon.status() is its status line.")
        return namespace
