"""`manage.py makedaemon NAME [--app APP] [--every 30s | --cron EXPR]`: a thin shell over `console.generator`."""
from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from daemons.console import generator
from daemons.scheduling import schedule

from ._base import DaemonCommand


def every_type(value: str) -> timedelta:
    try:
        return schedule.parse_interval(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cron_type(value: str) -> str:
    try:
        return schedule.cron(value).expression
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class Command(DaemonCommand):
    requires_linux = False  # it only writes source files
    help = ("Generate a daemon: its class in APP/daemons.py and a test that runs one tick. "
            "Tests go in tests/<app>/ when the project has a tests/ folder, else in <app>/tests/.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name", help="the daemon's name, a Python identifier (e.g. nightly_report)")
        parser.add_argument("--app", dest="app_label", help="the app to put it in (default: the only project app)")
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--every", type=every_type, help="tick interval, e.g. 30s, 5m, 1h (default 5s)")
        when.add_argument("--cron", type=cron_type, help='a cron expression in TIME_ZONE, e.g. "*/5 * * * *"')

    def handle(self, *args: Any, name: str, app_label: str | None, every: timedelta | None, cron: str | None,
               **options: Any) -> None:
        base_dir = Path(settings.BASE_DIR).resolve()
        try:
            made = generator.daemon_generate(name=name, base_dir=base_dir, app_label=app_label, every=every, cron=cron)
        except generator.GeneratorError as exc:
            raise CommandError(str(exc)) from None
        verb = "Created" if made.created_daemons_file else "Added"
        self.stdout.write(f"{verb} {made.class_name} in {made.daemons_file.relative_to(base_dir)}")
        self.stdout.write(f"Wrote {made.test_file.relative_to(base_dir)}")
        self.stdout.write(f"Its test runs with `manage.py test {made.app_label}` (or pytest with pytest-django).")
        self.stdout.write(f"Next: put the business logic in a service, then `manage.py rundaemon {name} --once`.")
