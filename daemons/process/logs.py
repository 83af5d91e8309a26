"""Per-daemon logging: adds the daemon's file (or stderr) handler to the project's own logging.

The project's LOGGING stays as Django configured it: every handler is kept, and the daemon's
handler is added to the root logger, so the project's loggers reach the daemon's log too.
Levels the project's LOGGING leaves unset (the root logger's and `daemons`', as in a project
`startproject` made, which has no LOGGING) get DAEMONS_LOG_LEVEL, so an INFO line of the
project's own `shop.work` logger is not dropped by Python's default WARNING. A
line carries the structured fields the code logs with `extra=` (`action=...`), the daemon's
name and instance, and the PID once. DAEMONS_LOG_FORMAT="json" writes one JSON object per line.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from django.conf import settings

from daemons import conf

logger = logging.getLogger("daemons.logs")

LOG_FILE_MODE = 0o640

# The one text layout of a daemon's lines; structured fields follow the message (see TextFormatter).
TEXT_FORMAT = "%(asctime)s %(levelname)s pid=%(process)d %(daemon_label)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=` (or a filter).
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName", "daemon", "instance", "daemon_label",
}


class LogFileError(Exception):
    """A log file that can't or mustn't be opened; the message is one line for the operator."""


def open_log(path: Path | str, owner: tuple[int, int] | None = None) -> int:
    """Open the log file `path` for appending and return its descriptor.

    Creates it 0640 if missing, owned by `owner` (uid, gid) when given. Never follows a symlink
    at `path` and accepts only a regular file (not a FIFO, device or directory), so a log path
    planted by someone else can't redirect a root daemon's writes. Raises LogFileError.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        # O_NONBLOCK so a FIFO planted at the path fails here instead of blocking until a reader comes.
        fd = os.open(path, flags, LOG_FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LogFileError(f"refusing log file {path}: it is a symbolic link") from None
        if exc.errno == errno.ENXIO:
            raise LogFileError(f"refusing log file {path}: not a regular file") from None
        raise LogFileError(f"cannot open log file {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LogFileError(f"refusing log file {path}: not a regular file")
        os.set_blocking(fd, True)
        if owner is not None:
            os.fchown(fd, *owner)
    except OSError as exc:
        os.close(fd)
        raise LogFileError(f"cannot open log file {path}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


class DaemonNameFilter(logging.Filter):
    """Stamp every record with the name and instance of the daemon this process runs."""

    daemon_name = "-"
    instance = 0

    def filter(self, record: logging.LogRecord) -> bool:
        record.daemon = self.daemon_name
        record.instance = self.instance
        record.daemon_label = f"daemon={self.daemon_name}" + (f" instance={self.instance}" if self.instance else "")
        return True


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields the code attached to `record` with `extra=`, in the order given."""
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES}


def _logfmt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or any(char.isspace() or char in '="' for char in text):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, then the record's structured fields as `key=value` (quoted when needed)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "daemon_label"):
            record.daemon_label = "daemon=-"
        fields = record_fields(record)
        line = super().formatMessage(record)
        return line + "".join(f" {key}={_logfmt(value)}" for key, value in fields.items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, daemon, instance, message, fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "daemon": getattr(record, "daemon", None),
            "instance": getattr(record, "instance", None),
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def formatter() -> logging.Formatter:
    """The formatter DAEMONS_LOG_FORMAT names: "text" (the default) or "json"."""
    return JsonFormatter() if conf.get("LOG_FORMAT") == "json" else TextFormatter()


class ReopenableFileHandler(logging.FileHandler):
    """A file handler whose file is opened by `open_log` and can be reopened after rotation."""

    def _open(self) -> IO[str]:  # type: ignore[override]
        try:
            fd = open_log(self.baseFilename)
        except LogFileError as exc:
            raise OSError(str(exc)) from None
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)

    def reopen(self) -> None:
        """Write to a fresh open of the path from now on (after logrotate moved the file).

        The new file is opened first: if that fails, LogFileError is raised and the handler
        keeps writing to the file it has.
        """
        stream = os.fdopen(open_log(self.baseFilename), "a", encoding=self.encoding or "utf-8", errors=self.errors)
        self.acquire()
        try:
            old, self.stream = self.stream, stream
        finally:
            self.release()
        if old is not None:
            old.flush()
            old.close()


_installed: logging.Handler | None = None

# Loggers whose level the kit set in `configure` because the project's LOGGING leaves it
# unset ("" is the root logger); `toggle_debug` switches these. "daemons" always.
_levelled: list[str] = ["daemons"]

# The level the command's -v asked for (see `set_verbosity`); None: DAEMONS_LOG_LEVEL.
_verbosity_level: int | None = None

VERBOSITY_LEVELS = {0: logging.WARNING, 2: logging.DEBUG, 3: logging.DEBUG}


def set_verbosity(verbosity: int) -> None:
    """Make a management command's `-v` the level `configure` gives the kit's loggers, for this process.

    0 is WARNING, 1 (the default) keeps DAEMONS_LOG_LEVEL, 2 and 3 are DEBUG. As with
    DAEMONS_LOG_LEVEL, a level that the project's LOGGING sets stays as it is.
    """
    global _verbosity_level
    _verbosity_level = VERBOSITY_LEVELS.get(verbosity)


def _levels_set_by(config: dict[str, Any]) -> set[str]:
    """The loggers whose level the project's LOGGING dict sets ("" for the root logger)."""
    loggers = config.get("loggers") or {}
    named = {name for name, each in loggers.items() if isinstance(each, dict) and "level" in each}
    root = config.get("root") or {}
    return named | ({""} if isinstance(root, dict) and "level" in root else set())


def _writes_to_stderr(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) is sys.stderr


def configure(name: str, log_path: Path | None, *, instance: int = 0) -> logging.StreamHandler[Any]:
    """Add daemon `name`'s handler to the root logger and return it.

    With `log_path` it appends to that file; without it the daemon logs to stderr (foreground
    mode, for systemd, supervisord and containers). Every handler the project configured stays,
    except that in the foreground a plain root handler on stderr gives way to the daemon's own,
    which writes to the same stream (else each line would show twice). The `daemons` logger
    and the root logger get DAEMONS_LOG_LEVEL (or the command's -v, see `set_verbosity`)
    unless the project's LOGGING sets their level. Calling it again replaces the handler an
    earlier call added.
    """
    global _installed, _levelled
    DaemonNameFilter.daemon_name = name
    DaemonNameFilter.instance = instance
    handler: logging.StreamHandler[Any] = (
        ReopenableFileHandler(log_path) if log_path is not None else logging.StreamHandler())
    handler.setFormatter(formatter())
    handler.addFilter(DaemonNameFilter())
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    if log_path is None:
        for duplicate in [h for h in root.handlers if _writes_to_stderr(h)]:
            root.removeHandler(duplicate)
    root.addHandler(handler)
    _installed = handler
    project_levels = _levels_set_by(getattr(settings, "LOGGING", None) or {})
    level = conf.log_level() if _verbosity_level is None else _verbosity_level
    managed = [logger_name for logger_name in ("daemons", "") if logger_name not in project_levels]
    for logger_name in managed:
        logging.getLogger(logger_name).setLevel(level)
    # toggle-debug is the operator's explicit ask: it switches `daemons` even when LOGGING set its level.
    _levelled = managed or ["daemons"]
    return handler


def files_to_preserve() -> list[int]:
    """The descriptors behind every configured handler's file or socket, to keep open across a detach.

    Detaching closes every descriptor not listed; a project's FileHandler (or syslog socket)
    would then write to a closed descriptor, or to whatever file reuses its number. Standard
    input, output and error are left out: detaching points them at /dev/null anyway.
    """
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [item for item in logging.Logger.manager.loggerDict.values() if isinstance(item, logging.Logger)]
    fds: set[int] = set()
    for each in loggers:
        for handler in each.handlers:
            for attribute in ("stream", "socket", "sock"):
                target = getattr(handler, attribute, None)
                try:
                    fd = target.fileno() if target is not None else -1
                except (OSError, ValueError, AttributeError):  # closed, or not backed by a descriptor
                    continue
                if isinstance(fd, int) and fd > 2:
                    fds.add(fd)
    return sorted(fds)


def reopen_files() -> bool:
    """Reopen every daemon log file (on SIGHUP, after rotation); return whether all were reopened.

    Never raises: a file that can't be reopened (its directory moved, unwritable, or the path
    now a symlink) is kept, and the reason is logged to it, so the daemon keeps running and
    logging. Called from the main loop, never from a signal handler.
    """
    reopened = True
    for handler in list(logging.getLogger().handlers):
        if not isinstance(handler, ReopenableFileHandler):
            continue
        try:
            handler.reopen()
        except Exception as exc:  # noqa: BLE001 - a failed reopen keeps the old file; the daemon runs on
            reopened = False
            try:
                logger.error("could not reopen the log file, still writing to this one: %s", exc,
                             extra={"action": "log_reopen_failed"})
            except Exception:  # noqa: BLE001  # pragma: no cover - logging reports its own failures; this must not raise
                pass
    return reopened


def toggle_debug() -> int:
    """Switch the loggers whose level the kit set (see `configure`) between INFO and DEBUG; return the new level.

    Those are `daemons` and, unless the project's LOGGING sets its level, the root logger,
    so the project's own loggers follow too. Levels the project set stay as they are.
    """
    level = logging.INFO if logging.getLogger("daemons").getEffectiveLevel() <= logging.DEBUG else logging.DEBUG
    for name in _levelled:
        logging.getLogger(name).setLevel(level)
    return level
