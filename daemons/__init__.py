"""Daemon Kit for Django: daemons that are management commands."""
from __future__ import annotations

from importlib import metadata

from daemons.cluster.wakeup import wake
from daemons.daemon import Control, Daemon, TickResult
from daemons.process import reporting
from daemons.registry import register

__all__ = ["Control", "Daemon", "TickResult", "__version__", "register", "reporting", "wake"]

DISTRIBUTION = "django-daemon-kit"

try:
    __version__ = metadata.version(DISTRIBUTION)
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
