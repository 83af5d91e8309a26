"""Daemon logging: added to the project's LOGGING, structured lines, JSON, safe opens and reopens."""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.process import logs
from tests.conftest import wait_for
from tests.support.processes import alive


@pytest.fixture
def logging_state(tmp_path: Path) -> Iterator[list[logging.Logger]]:
    """Restore the root logger, the `daemons` level and any logger a test lists, as they were."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_root_level = list(root.handlers), logging.getLogger("daemons").level, root.level
    touched: list[logging.Logger] = []
    try:
        yield touched
    finally:
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_root_level)
        logs._levelled, logs._verbosity_level = ["daemons"], None
        logging.getLogger("daemons").setLevel(saved_level)
        for each in touched:
            for handler in each.handlers:
                handler.close()
            each.handlers.clear()
        logs._installed = None


def project_logger(touched: list[logging.Logger], name: str, path: Path) -> logging.Logger:
    """A project logger with its own FileHandler, as a project's LOGGING would configure it."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.FileHandler(path))
    touched.append(logger)
    return logger


def test_the_daemon_handler_is_added_and_every_project_handler_kept(logging_state, tmp_path: Path) -> None:
    root_file = logging.FileHandler(tmp_path / "root.log")
    logging.getLogger().addHandler(root_file)
    jobs = project_logger(logging_state, "project.jobs", tmp_path / "project.log")
    handler = logs.configure("counter", tmp_path / "counter.log")
    assert root_file in logging.getLogger().handlers and handler in logging.getLogger().handlers
    jobs.warning("exported %d rows", 12, extra={"action": "exported"})
    for name in ("project.log", "root.log", "counter.log"):
        assert "exported 12 rows" in (tmp_path / name).read_text(), name


def test_configuring_again_replaces_only_the_daemons_own_handler(logging_state, tmp_path: Path) -> None:
    before = list(logging.getLogger().handlers)
    first = logs.configure("counter", tmp_path / "one.log")
    second = logs.configure("counter", tmp_path / "two.log")
    assert logging.getLogger().handlers == [*before, second]
    assert first.stream is None  # closed


def test_in_the_foreground_a_root_stderr_handler_gives_way_so_no_line_shows_twice(logging_state,
                                                                                 tmp_path: Path) -> None:
    console = logging.StreamHandler(sys.stderr)
    to_file = logging.FileHandler(tmp_path / "root.log")
    logging.getLogger().handlers.extend([console, to_file])
    handler = logs.configure("counter", None)
    root_handlers = logging.getLogger().handlers
    assert console not in root_handlers and to_file in root_handlers and handler in root_handlers
    assert handler.stream is sys.stderr


def test_a_text_line_carries_pid_once_daemon_instance_and_the_structured_fields(logging_state, tmp_path: Path) -> None:
    path = tmp_path / "counter.3.log"
    logs.configure("counter", path, instance=3)
    log = logging.getLogger("daemons.counter")
    log.info("counted %d ticks", 2, extra={"action": "tick_done", "processed": 2, "note": "two words"})
    try:
        raise ValueError("bad tick")
    except ValueError:
        log.exception("tick failed", extra={"action": "tick_error"})
    lines = path.read_text().splitlines()
    first = lines[0]
    assert f" INFO pid={os.getpid()} daemon=counter instance=3 daemons.counter: counted 2 ticks " in first
    assert first.endswith(' action=tick_done processed=2 note="two words"')
    assert first.count(str(os.getpid())) == 1
    assert lines[1].endswith("daemons.counter: tick failed action=tick_error")
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ValueError: bad tick"


def test_instance_zero_is_not_spelled_out(logging_state, tmp_path: Path) -> None:
    path = tmp_path / "counter.log"
    logs.configure("counter", path)
    logging.getLogger("daemons.counter").info("hello")
    assert f"pid={os.getpid()} daemon=counter daemons.counter: hello" in path.read_text()


def test_json_format_writes_one_object_per_line(settings, logging_state, tmp_path: Path) -> None:
    settings.DAEMONS_LOG_FORMAT = "json"
    path = tmp_path / "counter.log"
    logs.configure("counter", path, instance=1)
    log = logging.getLogger("daemons.counter")
    log.info("counted %d ticks", 2, extra={"action": "tick_done", "processed": 2})
    try:
        raise ValueError("bad\ntick")
    except ValueError:
        log.exception("tick failed", extra={"action": "tick_error"})
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    done, error = (json.loads(line) for line in lines)
    assert {key: done[key] for key in ("level", "logger", "pid", "daemon", "instance", "message", "action",
                                       "processed")} == {
        "level": "INFO", "logger": "daemons.counter", "pid": os.getpid(), "daemon": "counter", "instance": 1,
        "message": "counted 2 ticks", "action": "tick_done", "processed": 2}
    assert done["time"].endswith("+00:00")
    assert error["action"] == "tick_error" and error["exception"].endswith("ValueError: bad\ntick")


def test_the_daemons_logger_gets_the_framework_level_unless_logging_sets_one(settings, logging_state,
                                                                            tmp_path: Path) -> None:
    settings.LOGGING = {"version": 1}
    settings.DAEMONS_LOG_LEVEL = "debug"
    logs.configure("counter", None)
    assert logging.getLogger("daemons").level == logging.DEBUG
    logging.getLogger("daemons").setLevel(logging.ERROR)
    settings.LOGGING = {"version": 1, "loggers": {"daemons": {"level": "ERROR"}}}
    logs.configure("counter", None)
    assert logging.getLogger("daemons").level == logging.ERROR


def test_without_logging_the_projects_own_info_lines_reach_the_daemons_log(settings, logging_state,
                                                                         tmp_path: Path) -> None:
    """startproject writes no LOGGING: the root logger is at Python's WARNING, which would drop them."""
    del settings.LOGGING
    logging.getLogger().setLevel(logging.WARNING)
    log = tmp_path / "work.log"
    logs.configure("work", log)
    logging.getLogger("shop.work").info("worked")
    logging.getLogger("shop.work").debug("details")
    assert [line.split(": ", 1)[1] for line in log.read_text().splitlines()] == ["worked"]
    assert logs.toggle_debug() == logging.DEBUG  # toggle-debug: the project's loggers follow
    logging.getLogger("shop.work").debug("details")
    assert log.read_text().splitlines()[-1].endswith("shop.work: details")
    assert logs.toggle_debug() == logging.INFO
    logging.getLogger("shop.work").debug("hidden again")
    assert "hidden again" not in log.read_text()


@pytest.mark.parametrize("project_logging", [
    {"version": 1, "root": {"level": "ERROR"}},
    {"version": 1, "loggers": {"": {"level": "ERROR"}}},
])
def test_a_root_level_the_project_sets_is_kept(settings, logging_state, tmp_path: Path, project_logging) -> None:
    settings.LOGGING = project_logging
    logging.getLogger().setLevel(logging.ERROR)
    log = tmp_path / "work.log"
    logs.configure("work", log)
    assert logging.getLogger().level == logging.ERROR
    logging.getLogger("shop.work").info("not wanted by the project")
    logs.toggle_debug()
    assert logging.getLogger().level == logging.ERROR and logging.getLogger("daemons").level == logging.DEBUG
    assert "not wanted" not in log.read_text()


def test_a_logger_the_project_configures_keeps_its_level(settings, logging_state, tmp_path: Path) -> None:
    settings.LOGGING = {"version": 1, "loggers": {"shop": {"level": "WARNING"}}}
    shop = logging.getLogger("shop")
    logging_state.append(shop)
    shop.setLevel(logging.WARNING)
    log = tmp_path / "work.log"
    logs.configure("work", log)
    logging.getLogger("shop.work").info("the project said WARNING for shop")
    logging.getLogger("other.work").info("nobody set a level here")
    assert [line.split(": ", 1)[1] for line in log.read_text().splitlines()] == ["nobody set a level here"]
    shop.setLevel(logging.NOTSET)


@pytest.mark.parametrize(("verbosity", "level"), [(0, logging.WARNING), (1, logging.ERROR), (2, logging.DEBUG),
                                                  (3, logging.DEBUG)])
def test_verbosity_sets_the_level_daemons_log_level_would(settings, logging_state, verbosity, level) -> None:
    settings.LOGGING = {"version": 1}
    settings.DAEMONS_LOG_LEVEL = "ERROR"
    logs.set_verbosity(verbosity)
    logs.configure("work", None)
    assert logging.getLogger().level == level and logging.getLogger("daemons").level == level


def test_files_to_preserve_lists_every_handlers_file_but_not_the_standard_streams(logging_state,
                                                                                 tmp_path: Path) -> None:
    watched = logging.handlers.WatchedFileHandler(tmp_path / "watched.log")
    stream_file = open(tmp_path / "stream.log", "a")
    on_stream = logging.StreamHandler(stream_file)
    named = logging.getLogger("project.preserved")
    named.addHandler(watched)
    named.addHandler(on_stream)
    named.addHandler(logging.StreamHandler(sys.stderr))
    logging_state.append(named)
    daemon = logs.configure("counter", tmp_path / "counter.log")
    fds = logs.files_to_preserve()
    assert watched.stream is not None
    assert {watched.stream.fileno(), stream_file.fileno(), daemon.stream.fileno()} <= set(fds)
    assert not {0, 1, 2} & set(fds)
    stream_file.close()


def test_open_log_creates_the_file_0640(tmp_path: Path) -> None:
    path = tmp_path / "new.log"
    old_umask = os.umask(0o022)
    try:
        os.close(logs.open_log(path))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_open_log_refuses_anything_but_a_regular_file(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    target.write_text("precious\n")
    path = tmp_path / "daemon.log"
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)  # a FIFO with no reader would block a plain open forever
    else:
        path.mkdir()
    with pytest.raises(logs.LogFileError) as error:
        logs.open_log(path)
    message = str(error.value)
    assert message.startswith(f"refusing log file {path}: ") or message.startswith(f"cannot open log file {path}: ")
    assert "\n" not in message
    assert target.read_text() == "precious\n"


def test_reopen_after_rotation_writes_to_the_new_file(logging_state, tmp_path: Path) -> None:
    path = tmp_path / "counter.log"
    logs.configure("counter", path)
    log = logging.getLogger("daemons.counter")
    log.info("before")
    path.rename(tmp_path / "counter.log.1")
    assert logs.reopen_files() is True
    log.info("after")
    rotated = (tmp_path / "counter.log.1").read_text()
    assert "before" in rotated and "after" not in rotated
    assert "after" in path.read_text()


@pytest.mark.parametrize("how", ["directory moved", "symlink planted"])
def test_a_failed_reopen_keeps_the_old_file_and_logs_why_to_it(logging_state, tmp_path: Path, how: str) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    path = log_dir / "counter.log"
    logs.configure("counter", path)
    log = logging.getLogger("daemons.counter")
    log.info("before")
    if how == "directory moved":
        log_dir.rename(tmp_path / "moved")
        old = tmp_path / "moved" / "counter.log"
    else:
        old = log_dir / "counter.log.1"
        path.rename(old)
        path.symlink_to(tmp_path / "elsewhere")
    assert logs.reopen_files() is False
    log.info("after")
    lines = old.read_text().splitlines()
    assert "could not reopen the log file, still writing to this one:" in lines[1]
    assert lines[1].endswith("action=log_reopen_failed") and "ERROR" in lines[1]
    assert lines[2].endswith("daemons.counter: after")
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.process
def test_sighup_after_the_log_directory_moved_keeps_a_detached_daemon_running(project, tmp_path: Path) -> None:
    log = project.log_file("counter")
    pid = project.start("counter")
    wait_for(lambda: "counted 1 tick" in log.read_text(), message="a tick in the log")
    moved = tmp_path / "log-moved"
    project.log_dir.rename(moved)
    os.kill(pid, signal.SIGHUP)
    old = moved / "counter.log"
    wait_for(lambda: "action=log_reopen_failed" in old.read_text(), timeout=30, message="the reopen error in the log")
    lines_after_error = old.read_text().split("action=log_reopen_failed", 1)[1]
    wait_for(lambda: "counted 1 tick" in old.read_text().split("action=log_reopen_failed", 1)[1], timeout=30,
             message="ticks logged to the old file after the failed reopen")
    assert alive(pid), lines_after_error
    assert project.pid_file("counter").exists()
    result = project.manage("stopdaemon", "counter")
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: not alive(pid), timeout=30, message="the daemon to stop")
    assert "stopped" in old.read_text().splitlines()[-1]


@pytest.mark.process
def test_a_symlink_planted_at_the_log_path_refuses_the_start_with_one_line(project, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("precious\n")
    project.log_dir.mkdir(parents=True)
    project.log_file("counter").symlink_to(target)
    result = project.manage("rundaemon", "counter", "--detach")
    assert result.returncode != 0
    assert str(project.log_file("counter")) in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
        result.stderr)
    assert "Traceback" not in result.stderr
    assert target.read_text() == "precious\n"
    assert not project.pid_file("counter").exists()


# --- a project as startproject makes it (tests/plain_settings.py: no LOGGING) --------------------

PLAIN = {"DJANGO_SETTINGS_MODULE": "tests.plain_settings", "TESTAPP_INTERVAL": "0.2"}
INFO_LINE = "INFO pid="
WORKED = "shop.work: worked on the shop's rows"
DETAILS = "shop.work: the details of the shop's rows"


@pytest.mark.process
@pytest.mark.parametrize(("verbosity", "shown", "hidden"), [("1", [WORKED], [DETAILS]), ("2", [WORKED, DETAILS], []),
                                                            ("0", [], [WORKED, DETAILS])])
def test_once_shows_the_projects_own_lines_at_the_verbosity_asked(project, verbosity, shown, hidden) -> None:
    result = project.manage("rundaemon", "work", "--once", "-v", verbosity, env=PLAIN)
    assert result.returncode == 0, result.stderr
    assert all(line in result.stderr for line in shown), result.stderr
    assert not any(line in result.stderr for line in hidden), result.stderr


@pytest.mark.process
def test_in_the_foreground_the_projects_own_lines_reach_stderr(project, tmp_path: Path) -> None:
    err = tmp_path / "stderr"
    with open(err, "w") as sink:
        process = project.popen("rundaemon", "work", env=PLAIN, stdout=sink, stderr=sink)
    wait_for(lambda: err.read_text().count(WORKED) >= 2, timeout=30, message="the daemon's own lines on stderr")
    process.terminate()
    assert process.wait(timeout=30) == 0
    assert DETAILS not in err.read_text()


@pytest.mark.process
def test_detached_the_projects_own_lines_reach_the_log_and_follow_toggle_debug(project) -> None:
    project.start("work", env=PLAIN)
    log = project.log_file("work")
    wait_for(lambda: WORKED in log.read_text(), timeout=30, message="the daemon's own line in its log")
    assert DETAILS not in log.read_text()
    assert project.manage("signaldaemon", "work", "toggle-debug", env=PLAIN).returncode == 0
    wait_for(lambda: DETAILS in log.read_text(), timeout=30, message="DEBUG lines after toggle-debug")
    assert project.manage("signaldaemon", "work", "toggle-debug", env=PLAIN).returncode == 0

    def after_second_toggle() -> str:
        text = log.read_text()
        return text.split("log level is now INFO", 1)[1] if "log level is now INFO" in text else ""

    wait_for(lambda: WORKED in after_second_toggle(), timeout=30, message="INFO lines after the second toggle")
    assert DETAILS not in after_second_toggle()
    assert project.manage("stopdaemon", "work", env=PLAIN).returncode == 0
