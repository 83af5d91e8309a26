"""Every DAEMONS_* setting with its default: the only place the framework's defaults live.

Read a setting as `conf.get("RUN_DIR")` (or `conf.run_dir()` for paths). Each read goes
to `django.conf.settings` first, so `override_settings` and per-process environments
work; a project that sets nothing gets the default below. The two directories are where a
service manager puts a process (systemd's `RuntimeDirectory=`), so for them a non-empty
environment variable of the same name wins over the setting: the files `daemonconfig`
writes set it, and they work in a project whose settings never read the environment.
`daemons.checks` validates each setting by its `kind`; `docs/adopting.md` lists them (a
test keeps the two in step).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

PREFIX = "DAEMONS_"


@dataclass(frozen=True)
class Setting:
    """One framework setting: its default, what it means (one line) and its kind, for validation.

    Kinds: "path" (absolute, or relative to BASE_DIR), "seconds" (a number > 0), "level" (a logging
    level name or number), "format" ("text" or "json"), "names" (None or a list of daemon names),
    "text" (a string), "bool" (True or False).
    """

    default: Any
    doc: str
    kind: str
    # Whether the environment variable DAEMONS_<name>, when set and not empty, wins over the setting.
    from_environment: bool = False


SETTINGS: dict[str, Setting] = {
    "RUN_DIR": Setting("var/run", "Where PID files and wake-up sockets live. An environment variable of this name "
                       "wins over the setting.", "path", from_environment=True),
    "LOG_DIR": Setting("var/log", "Where detached daemons write their logs, one file per daemon instance. An "
                       "environment variable of this name wins over the setting.", "path", from_environment=True),
    "STOP_TIMEOUT": Setting(8.0, "Seconds a stopping daemon may take to finish its work before it gives up.",
                            "seconds"),
    "LOG_LEVEL": Setting("INFO", "Level of the framework's and the daemons' loggers, unless LOGGING sets one.",
                         "level"),
    "LOG_FORMAT": Setting("text", 'Daemon log lines: "text" (readable) or "json" (one object per line).', "format"),
    "HEALTH_EXPECTED": Setting(None, "Daemon names the health endpoint requires running; None: every registered one.",
                               "names"),
    "METRICS_TOKEN": Setting("", "Bearer token for the metrics endpoint; empty: loopback clients only.", "text"),
    "DASHBOARD_REFRESH": Setting(10, "Seconds between the staff dashboard's reloads.", "seconds"),
    "RESTART_BACKOFF": Setting(0.5, "Seconds before the supervisor restarts a daemon that died; doubled per death "
                               "in a row.", "seconds"),
    "RESTART_BACKOFF_CAP": Setting(60.0, "The most seconds the supervisor waits before restarting a daemon.",
                                   "seconds"),
    "LISTEN": Setting(True, "On PostgreSQL, wake daemons with LISTEN/NOTIFY; False behind PgBouncer in transaction "
                      "mode.", "bool"),
}

# name (without the prefix) -> default.
DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in SETTINGS.items()}


def get(name: str) -> Any:
    """The value of DAEMONS_<name>: the environment's (for the two directories), the project's, else the default."""
    if name not in SETTINGS:
        raise KeyError(f"unknown daemons setting {PREFIX}{name}")
    if from_environment(name):
        return os.environ[PREFIX + name]
    return getattr(settings, PREFIX + name, SETTINGS[name].default)


def from_environment(name: str) -> bool:
    """Whether DAEMONS_<name> comes from the environment, which then wins over the setting."""
    return SETTINGS[name].from_environment and bool(os.environ.get(PREFIX + name))


def base_dir() -> Path:
    """The project root that relative paths are taken from: BASE_DIR, else the working directory."""
    return Path(getattr(settings, "BASE_DIR", None) or Path.cwd())


def path(name: str) -> Path:
    """The path setting DAEMONS_<name>, made absolute against `base_dir()`."""
    value = Path(get(name))
    return value if value.is_absolute() else base_dir() / value


def run_dir() -> Path:
    """Where PID files and wake-up sockets live (DAEMONS_RUN_DIR, default var/run)."""
    return path("RUN_DIR")


def log_dir() -> Path:
    """Where detached daemons write their logs (DAEMONS_LOG_DIR, default var/log)."""
    return path("LOG_DIR")


def stop_timeout() -> float:
    """Seconds a stop waits for the work in progress (DAEMONS_STOP_TIMEOUT, default 8)."""
    return float(get("STOP_TIMEOUT"))


# A stopping daemon gives up on its work at DAEMONS_STOP_TIMEOUT; this is how much longer whoever
# stops it (the operator's stop, the supervisor) gives it to release its PID file before calling the stop late.
STOP_GRACE = 2.0


def stop_wait() -> float:
    """Seconds a stop waits for a daemon by default: its own stop deadline plus `STOP_GRACE`."""
    return stop_timeout() + STOP_GRACE


def log_level() -> int:
    """The level DAEMONS_LOG_LEVEL names, as a number (default INFO)."""
    value = get("LOG_LEVEL")
    return value if isinstance(value, int) else logging.getLevelName(str(value).upper())


def restart_backoff() -> float:
    """Seconds before a supervised daemon that died is restarted (DAEMONS_RESTART_BACKOFF, default 0.5)."""
    return float(get("RESTART_BACKOFF"))


def restart_backoff_cap() -> float:
    """The longest wait before a supervised daemon is restarted (DAEMONS_RESTART_BACKOFF_CAP, default 60)."""
    return float(get("RESTART_BACKOFF_CAP"))
