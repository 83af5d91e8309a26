"""`manage.py stopdaemon NAME [--instance N] | --all [--timeout S] [--kill]`: stop the daemons that hold their locks."""
from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError

from daemons import conf
from daemons.console import operations
from daemons.console.operations import StopReport, StopTarget
from daemons.process import pidfile

from ._base import DaemonCommand


class Command(DaemonCommand):
    help = ("Send SIGTERM to a running daemon (or to every one on this host with --all) and wait for it to stop. "
            "Only the process holding the PID file's lock is signalled.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        self.add_name_argument(parser, required=False)
        parser.add_argument("--all", action="store_true", dest="every",
                            help="stop the supervisor, its daemons and every other daemon running on this host")
        self.add_stop_arguments(parser)
        self.add_instance_argument(parser)

    def handle(self, *args: Any, name: str | None, every: bool, timeout: float | None, kill: bool, instance: int,
               **options: Any) -> None:
        if every == bool(name):
            raise CommandError("give a daemon's NAME or --all, not both" if every else "give a daemon's NAME or --all",
                               returncode=2)
        if every:
            targets = operations.all_stop_targets()
            if not targets:
                self.stdout.write("no daemon is running on this host")
                return
        else:
            assert name is not None  # NAME or --all, checked above
            self.daemon_class(name)
            targets = [operations.stop_target(name, instance)]
        self.timeout = conf.stop_wait() if timeout is None else timeout
        reports = operations.stop_many(targets, timeout=self.timeout, kill=kill, on_done=self.done,
                                       on_wait=self.waiting)
        failed = [report for report in reports if report.outcome is None or report.outcome.state == "timeout"]
        killed = [label for report in reports for label in report.killed]
        problems = [self.failure(report) for report in failed]
        if killed:
            problems.append(f"had to kill {', '.join(killed)}")
        if problems:
            raise CommandError("; ".join(problems))

    def done(self, report: StopReport) -> None:
        outcome, label = report.outcome, report.target.label
        for child, event in report.children.items():
            if event in ("stopped", "killed"):
                self.stdout.write(f"{child} {event} (by the supervisor)")
        if outcome is None or outcome.state == "timeout":
            return  # said once, in the error at the end
        if outcome.state == "not_running":
            extra = f" (stale PID file names pid {outcome.stale_pid}; not signalled)" if outcome.stale_pid else ""
            self.stdout.write(f"{label} is not running{extra}")
        elif outcome.state == "stopped":
            self.stdout.write(f"{label} stopped (pid {outcome.pid})")
        else:
            self.stdout.write(f"{label} did not stop within {self.timeout:g}s; killed (pid {outcome.pid})")
        self.stdout.flush()

    def waiting(self, pending: list[StopTarget], elapsed: float) -> None:
        names = ", ".join(f"{target.label} (pid {pidfile.read_holder(target.pid_file, wait=0) or '?'})"
                          for target in pending)
        self.stdout.write(f"waiting for {names}: {elapsed:.0f}s of {self.timeout:g}s")
        self.stdout.flush()

    def failure(self, report: StopReport) -> str:
        if report.outcome is None:
            return f"{report.target.label}: {report.error}"
        return f"{report.target.label} (pid {report.outcome.pid}) did not stop within {self.timeout:g}s; try --kill"
