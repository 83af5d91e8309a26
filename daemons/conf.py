"""Every DAEMONS_* setting with its default: the only place the framework's defaults live.

Read a setting as `conf.get("RUN_DIR")` (or `conf.run_dir()` for paths). Each read goes
to `django.conf.settings` first, so `override_settings` and per-process environments
work; a project that sets nothing gets the default below.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

PREFIX = "DAEMONS_"

# name (without the prefix) -> default. Paths relative to BASE_DIR (or the working directory).
DEFAULTS: dict[str, Any] = {
    "RUN_DIR": "var/run",
    "LOG_DIR": "var/log",
    "STOP_TIMEOUT": 8.0,
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "text",
    "HEALTH_EXPECTED": None,  # daemon names /daemons/health/ requires running; None: every registered daemon
    "METRICS_TOKEN": "",  # bearer token for /daemons/metrics/; empty: loopback clients only
    "DASHBOARD_REFRESH": 10,  # seconds between the staff dashboard's reloads
}


def get(name: str) -> Any:
    """The value of DAEMONS_<name>: the project's setting, else the default."""
    if name not in DEFAULTS:
        raise KeyError(f"unknown daemons setting {PREFIX}{name}")
    return getattr(settings, PREFIX + name, DEFAULTS[name])


def base_dir() -> Path:
    """The project root that relative paths are taken from: BASE_DIR, else the working directory."""
    return Path(getattr(settings, "BASE_DIR", None) or Path.cwd())


def _path(name: str) -> Path:
    path = Path(get(name))
    return path if path.is_absolute() else base_dir() / path


def run_dir() -> Path:
    """Where PID files and wake-up sockets live (DAEMONS_RUN_DIR, default var/run)."""
    return _path("RUN_DIR")


def log_dir() -> Path:
    """Where detached daemons write their logs (DAEMONS_LOG_DIR, default var/log)."""
    return _path("LOG_DIR")


def stop_timeout() -> float:
    """Seconds a stop waits for the work in progress (DAEMONS_STOP_TIMEOUT, default 8)."""
    return float(get("STOP_TIMEOUT"))
