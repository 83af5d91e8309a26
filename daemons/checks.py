"""System checks (`manage.py check`) for what would really make a daemon fail at start."""
from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, register

from . import registry


def _directory_problem(path: Path) -> str | None:
    """Why the daemon could not create or write `path`, or None if it can.

    A directory that doesn't exist yet is fine as long as its nearest existing ancestor
    is a directory we may write to: the daemon creates it at start.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return f"no existing ancestor of {path}"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory" if probe == path else f"{probe} is a file, so {path} can't be created"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user"
    return None


@register("daemons")
def check_daemon_settings(app_configs=None, **kwargs) -> list[Error]:
    errors: list[Error] = []
    for setting, check_id in (("DAEMONS_RUN_DIR", "daemons.E001"), ("DAEMONS_LOG_DIR", "daemons.E002")):
        problem = _directory_problem(Path(getattr(settings, setting)))
        if problem:
            errors.append(Error(f"{setting}: {problem}", id=check_id))
    for name in registry.names():
        try:
            seconds = registry.get(name).interval_seconds()
        except (TypeError, ValueError) as exc:
            errors.append(Error(f"daemon {name!r}: invalid interval: {exc}", id="daemons.E003"))
            continue
        if not seconds >= 0:
            errors.append(Error(f"daemon {name!r}: interval must be zero or more seconds, got {seconds}",
                                id="daemons.E003"))
    timeout = getattr(settings, "DAEMONS_STOP_TIMEOUT", 8.0)
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        errors.append(Error(f"DAEMONS_STOP_TIMEOUT must be a positive number of seconds, got {timeout!r}",
                            id="daemons.E004"))
    dsn = getattr(settings, "SENTRY_DSN", "")
    if dsn:
        from sentry_sdk.utils import BadDsn, Dsn

        try:
            Dsn(dsn)
        except BadDsn as exc:
            errors.append(Error(f"SENTRY_DSN is not a valid Sentry DSN: {exc}", id="daemons.E005"))
    return errors
