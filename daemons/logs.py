"""Per-daemon logging: one file (or stderr) per daemon, configured through Django's LOGGING."""
from __future__ import annotations

import copy
import logging
import logging.config
import os
from pathlib import Path
from typing import Any

from django.conf import settings

LOG_FILE_MODE = 0o640


class DaemonNameFilter(logging.Filter):
    """Stamp every record with the name of the daemon this process runs."""

    daemon_name = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.daemon = self.daemon_name
        return True


class ReopenableFileHandler(logging.FileHandler):
    """A file handler whose file is created 0640 and can be reopened after rotation."""

    def _open(self):  # type: ignore[override]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_FILE_MODE)
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)

    def reopen(self) -> None:
        """Close the current file and open the path again (after logrotate moved it)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.flush()
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def logging_config(name: str, log_path: Path | None, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return a dictConfig for daemon `name`: settings.LOGGING with a daemon handler on the root.

    With `log_path` the handler appends to that file; without it the daemon logs to stderr
    (foreground mode, for systemd, supervisord and containers).
    """
    config = copy.deepcopy(base if base is not None else settings.LOGGING)
    config.setdefault("version", 1)
    config.setdefault("formatters", {}).setdefault(
        "daemon", {"format": "%(asctime)s %(levelname)s pid=%(process)d daemon=%(daemon)s %(name)s: %(message)s"}
    )
    config.setdefault("filters", {})["daemon_name"] = {"()": "daemons.logs.DaemonNameFilter"}
    handler: dict[str, Any] = {"formatter": "daemon", "filters": ["daemon_name"]}
    if log_path is None:
        handler["class"] = "logging.StreamHandler"
    else:
        handler.update({"class": "daemons.logs.ReopenableFileHandler", "filename": str(log_path), "delay": False})
    config.setdefault("handlers", {})["daemon"] = handler
    root = config.setdefault("root", {})
    root["handlers"] = ["daemon"]
    root.setdefault("level", "WARNING")
    # Loggers named in settings keep their levels but send through the root's daemon handler.
    for logger in config.get("loggers", {}).values():
        logger.pop("handlers", None)
        logger["propagate"] = True
    config.setdefault("loggers", {}).setdefault("daemons", {}).setdefault("level", "INFO")
    return config


def configure(name: str, log_path: Path | None) -> None:
    """Configure this process's logging for daemon `name` (see `logging_config`)."""
    DaemonNameFilter.daemon_name = name
    logging.config.dictConfig(logging_config(name, log_path))


def reopen_files() -> None:
    """Reopen every reopenable log file; called from the main loop on SIGHUP."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()


def toggle_debug(logger_name: str = "daemons") -> int:
    """Switch `logger_name` between INFO and DEBUG; return the new level."""
    logger = logging.getLogger(logger_name)
    level = logging.INFO if logger.getEffectiveLevel() <= logging.DEBUG else logging.DEBUG
    logger.setLevel(level)
    return level


def files_to_preserve() -> list[int]:
    """The descriptors of every configured logger's open log file, to keep open across a detach."""
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    fds = []
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.FileHandler) and stream is not None and not stream.closed:
                fds.append(stream.fileno())
    return sorted(set(fds))
