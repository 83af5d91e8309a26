"""System checks (`manage.py check`) for what would really make a daemon fail at start."""
from __future__ import annotations

import importlib.util
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.checks.registry import registry as check_registry

from daemons import conf, registry


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


def _path_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return f"must be a directory path, got {value!r}"
    return _directory_problem(conf.path(name))


def _seconds_problem(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return f"must be a positive number of seconds, got {value!r}"
    return None


def _level_problem(name: str, value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    if isinstance(value, str) and isinstance(logging.getLevelName(value.upper()), int):
        return None
    return f"must be a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL), got {value!r}"


def _format_problem(name: str, value: Any) -> str | None:
    return None if value in ("text", "json") else f'must be "text" or "json", got {value!r}'


def _names_problem(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        unknown = sorted(set(value) - set(registry.names()))
        return f"names no registered daemon: {', '.join(unknown)}" if unknown else None
    return f"must be None or a list of daemon names, got {value!r}"


def _text_problem(name: str, value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be a string, got {value!r}"


def _bool_problem(name: str, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be True or False, got {value!r}"


# kind (see conf.Setting) -> the function that says what is wrong with a value of that kind.
VALIDATORS: dict[str, Callable[[str, Any], str | None]] = {
    "path": _path_problem,
    "seconds": _seconds_problem,
    "level": _level_problem,
    "format": _format_problem,
    "names": _names_problem,
    "text": _text_problem,
    "bool": _bool_problem,
}

# Each setting keeps its own id, so a project can silence one with SILENCED_SYSTEM_CHECKS.
CHECK_IDS: dict[str, str] = {
    "RUN_DIR": "daemons.E001",
    "LOG_DIR": "daemons.E002",
    "STOP_TIMEOUT": "daemons.E004",
    "LOG_LEVEL": "daemons.E006",
    "LOG_FORMAT": "daemons.E007",
    "HEALTH_EXPECTED": "daemons.E009",
    "METRICS_TOKEN": "daemons.E010",
    "DASHBOARD_REFRESH": "daemons.E011",
    "LISTEN": "daemons.E012",
    "RESTART_BACKOFF": "daemons.E013",
    "RESTART_BACKOFF_CAP": "daemons.E014",
}


def setting_problems() -> list[CheckMessage]:
    """One Error per DAEMONS_* setting with a wrong type or value, one Warning per unknown DAEMONS_* name."""
    messages: list[CheckMessage] = []
    for name, setting in conf.SETTINGS.items():
        problem = VALIDATORS[setting.kind](name, conf.get(name))
        if problem:
            source = " (from the environment)" if conf.from_environment(name) else ""
            messages.append(Error(f"{conf.PREFIX}{name}{source}: {problem}", id=CHECK_IDS[name]))
    for attribute in dir(settings):
        if attribute.startswith(conf.PREFIX) and attribute[len(conf.PREFIX):] not in conf.SETTINGS:
            known = ", ".join(conf.PREFIX + name for name in conf.SETTINGS)
            messages.append(Warning(f"{attribute} is not a setting of the daemons framework; known: {known}",
                                    id="daemons.W001"))
    return messages


def sentry_problems() -> list[CheckMessage]:
    """An Error when SENTRY_DSN is set but is not a DSN, or sentry-sdk (the [sentry] extra) is missing."""
    dsn = getattr(settings, "SENTRY_DSN", "")
    if not dsn:
        return []
    if importlib.util.find_spec("sentry_sdk") is None:
        return [Error("SENTRY_DSN is set but sentry-sdk is not installed: pip install 'django-daemon-kit[sentry]'",
                      id="daemons.E008")]
    from sentry_sdk.utils import BadDsn, Dsn

    try:
        Dsn(dsn)
    except BadDsn as exc:
        return [Error(f"SENTRY_DSN is not a valid Sentry DSN: {exc}", id="daemons.E005")]
    return []


def interval_problems() -> list[CheckMessage]:
    """An Error for each registered daemon whose interval is not a number of seconds >= 0."""
    errors: list[CheckMessage] = []
    for name in registry.names():
        try:
            seconds = registry.get(name).interval_seconds()
        except (TypeError, ValueError) as exc:
            errors.append(Error(f"daemon {name!r}: invalid interval: {exc}", id="daemons.E003"))
            continue
        if not seconds >= 0:
            errors.append(Error(f"daemon {name!r}: interval must be zero or more seconds, got {seconds}",
                                id="daemons.E003"))
    return errors


# Django's checks of what only the web process and the other commands run. A check's imports stay in a daemon's
# memory for its whole life, and these import the most: the URL checks the ROOT_URLCONF (every view and form, the
# admin's URLs), the template checks every tag library, the commands check migrate's and makemigrations' autodetector.
WEB_CHECK_TAGS = frozenset({Tags.urls, Tags.templates, Tags.staticfiles, Tags.admin, Tags.security, Tags.commands})
# Untagged, so named: it imports every class in MIDDLEWARE.
WEB_CHECKS = frozenset({"django.contrib.auth.checks.check_middleware"})


def daemon_check_messages() -> list[CheckMessage]:
    """What `rundaemon` checks before a daemon starts: every registered check but the web process's.

    The framework's own, the models' and every check a project registered without tags (its mail settings, say)
    still stop a misconfigured daemon before it starts. The database checks run only when given databases, as in
    `manage.py check`: the daemon makes its own query before it reports ready, and says in one line what is wrong.
    """
    return [message for check in check_registry.get_checks()
            if WEB_CHECK_TAGS.isdisjoint(check.tags) and _qualified_name(check) not in WEB_CHECKS
            for message in check(app_configs=None, databases=None)]


def _qualified_name(check: Callable[..., Any]) -> str:
    return f"{check.__module__}.{getattr(check, '__qualname__', '')}"


def database_problem(exc: Exception, using: str = "default") -> str:
    """One line for the operator about `exc`, a DatabaseError at a daemon's start.

    When migrations are pending (a new project that never ran migrate, or an upgrade of
    the kit), that is the cause whatever the driver said ("no such table: ..."), and the
    line says what to run. Otherwise the database is out of reach, and the line says so.
    """
    from django.db import DatabaseError, connections
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connections[using])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError:
        pending = []
    if pending:
        return f"the database is not migrated: run `manage.py migrate` ({str(exc).strip()})"
    return f"cannot reach the database: {str(exc).strip()}"


def linux_facilities_missing(proc: Path = Path("/proc/self/fd")) -> str | None:
    """What this system lacks of the Linux facilities the process commands need (see DaemonCommand), or None.

    The one-line reason is meant for the operator: the commands that can't work here stop with it.
    """
    missing = [name for name, present in (("os.pidfd_open", hasattr(os, "pidfd_open")), ("/proc", proc.is_dir()))
               if not present]
    if not missing:
        return None
    return (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not available on {platform.system()}: "
            "--detach, --all, stopdaemon, restartdaemon, signaldaemon and daemonstatus need Linux; "
            "foreground rundaemon NAME and --once work")


def platform_problems() -> list[CheckMessage]:
    """A Warning on systems without the Linux facilities the process commands rely on."""
    missing = linux_facilities_missing()
    return [Warning(missing, id="daemons.W002")] if missing else []


@register("daemons")
def check_daemon_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every problem with the framework's settings and the registered daemons, for `manage.py check`."""
    return [*setting_problems(), *sentry_problems(), *interval_problems(), *platform_problems()]
