"""Service-manager files for a daemon: a systemd unit, a supervisord program, a logrotate stanza."""
from __future__ import annotations

import dataclasses
import grp
import math
import os
import pwd
import shlex
import sys
from pathlib import Path, PurePosixPath

from django.conf import settings

from daemons import conf
from daemons.daemon import Daemon

MIN_WATCHDOG = 30


@dataclasses.dataclass(frozen=True)
class Deployment:
    """Where and as whom a daemon runs on the server; every file is rendered from this."""

    name: str
    project_dir: Path
    python: Path
    user: str
    group: str
    env_file: Path
    log_file: Path
    pid_file: Path
    watchdog_seconds: int
    stop_seconds: int = 10
    # What `rundaemon` and `daemonconfig` are given: the daemon's name, or "--all" for the supervisor.
    target: str = ""
    unit: str = ""

    @property
    def slug(self) -> str:
        return self.project_dir.name or "daemons"

    @property
    def selector(self) -> str:
        return self.target or self.name

    @property
    def unit_name(self) -> str:
        return self.unit or self.name

    @property
    def description(self) -> str:
        return f"{self.name} daemon ({self.slug})" if not self.target else f"every daemon of {self.slug}, supervised"

    @property
    def command(self) -> str:
        """The foreground command: no --detach, the service manager is the parent."""
        return " ".join(shlex.quote(str(part)) for part in
                        (self.python, self.project_dir / "manage.py", "rundaemon", self.selector))


def default_watchdog(daemon_cls: type[Daemon]) -> int:
    """Three intervals, and at least 30 s, so one slow tick isn't taken for a hang."""
    return max(MIN_WATCHDOG, math.ceil(3 * daemon_cls.interval_seconds()))


def _rebase(path: Path, project_dir: Path) -> Path:
    """A path under this checkout, moved under `project_dir` (the server's checkout).

    Only its directory is resolved: a virtualenv's `bin/python` is a symbolic link, and
    the unit must name the link (which selects the virtualenv), not the system interpreter.
    """
    base = Path(settings.BASE_DIR).resolve()
    path = Path(path).absolute()
    path = path.parent.resolve() / path.name
    return project_dir / path.relative_to(base) if path.is_relative_to(base) else path


def interpreter(python: Path | None, project_dir: Path) -> Path:
    """The interpreter the service runs: `python` if given, else the one running this command.

    Whatever ran `daemonconfig` has the project and the kit installed, wherever its
    virtualenv is. When it lies inside this checkout it is moved under `project_dir`, as the
    log and PID paths are, so files generated for a server name the server's checkout.
    """
    return Path(python) if python else _rebase(Path(sys.executable), project_dir)


def deployment_for(daemon_cls: type[Daemon], *, project_dir: Path | None = None, python: Path | None = None,
                   user: str | None = None, group: str | None = None, env_file: Path | None = None,
                   watchdog_seconds: int | None = None) -> Deployment:
    """Fill in the defaults: this project, the interpreter running this command, the owner of the project directory.

    The PID and log paths come from DAEMONS_RUN_DIR and DAEMONS_LOG_DIR, moved under
    `project_dir` when they lie inside this checkout.
    """
    from daemons.process.paths import RunPaths

    paths = RunPaths.for_daemon(daemon_cls.name)
    watchdog_seconds = watchdog_seconds or default_watchdog(daemon_cls)
    return _deployment(daemon_cls.name, paths.log, paths.pid, project_dir=project_dir, python=python, user=user,
                       group=group, env_file=env_file, watchdog_seconds=watchdog_seconds)


def supervisor_deployment(*, project_dir: Path | None = None, python: Path | None = None, user: str | None = None,
                          group: str | None = None, env_file: Path | None = None,
                          watchdog_seconds: int | None = None) -> Deployment:
    """The deployment of `rundaemon --all`: one supervisor that forks every registered daemon.

    Its unit is named after the project (`<project>-daemons`), and its stop timeout covers
    the children's own stop deadline plus the supervisor's grace before SIGKILL.
    """
    from daemons.process import supervisor

    project_dir = Path(project_dir or settings.BASE_DIR).resolve()
    stop_seconds = math.ceil(conf.stop_wait()) + 2
    return dataclasses.replace(
        _deployment(supervisor.NAME, supervisor.log_path(), supervisor.pid_path(), project_dir=project_dir,
                    python=python, user=user, group=group, env_file=env_file,
                    watchdog_seconds=watchdog_seconds or MIN_WATCHDOG),
        stop_seconds=stop_seconds, target="--all", unit=f"{project_dir.name or 'project'}-daemons")


def _deployment(name: str, log_file: Path, pid_file: Path, *, project_dir: Path | None, python: Path | None,
                user: str | None, group: str | None, env_file: Path | None, watchdog_seconds: int) -> Deployment:
    project_dir = Path(project_dir or settings.BASE_DIR).resolve()
    if user is None:
        try:
            user = pwd.getpwuid(os.stat(project_dir).st_uid).pw_name
        except (KeyError, OSError):
            user = pwd.getpwuid(os.getuid()).pw_name
    if group is None:
        try:
            group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        except KeyError:
            group = user
    return Deployment(
        name=name,
        project_dir=project_dir,
        python=interpreter(python, project_dir),
        user=user,
        group=group,
        env_file=Path(env_file) if env_file else project_dir / ".env",
        log_file=_rebase(log_file, project_dir),
        pid_file=_rebase(pid_file, project_dir),
        watchdog_seconds=watchdog_seconds,
    )


def systemd_unit(d: Deployment) -> str:
    """A Type=notify unit: the daemon says READY=1 once it reached the database, then pings the watchdog.

    Logs go to the journal (the daemon writes to stderr in the foreground). The PID
    file and wake-up socket live in systemd's RuntimeDirectory=, /run/<project>, kept
    across restarts and shared by the project's daemons: DAEMONS_RUN_DIR in the environment
    wins over the project's settings (see `conf`), and PIDFile= names the same file. Set
    the same DAEMONS_RUN_DIR where the web process and `daemonstatus` run, so they find them.
    """
    unit = d.unit_name
    run_dir = PurePosixPath("/run") / d.slug
    install = f"cp {unit}.service /etc/systemd/system/ && systemctl daemon-reload && systemctl enable --now {unit}"
    return f"""\
# {d.unit_name}.service: generated by `manage.py daemonconfig {d.selector} --systemd`.
# Install: {install}
[Unit]
Description={d.description}
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={d.command}
WorkingDirectory={d.project_dir}
User={d.user}
Group={d.group}
# Settings from this file win over the Environment= lines below: if it sets
# DAEMONS_RUN_DIR, it must be {run_dir} too, where PIDFile= looks.
EnvironmentFile=-{d.env_file}
Environment=DAEMONS_RUN_DIR={run_dir}
RuntimeDirectory={d.slug}
RuntimeDirectoryPreserve=yes
PIDFile={run_dir / d.pid_file.name}
WatchdogSec={d.watchdog_seconds}
Restart=on-failure
RestartSec=5
# SIGTERM starts a graceful stop; after {d.stop_seconds} s whatever is left is killed.
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec={d.stop_seconds}

[Install]
WantedBy=multi-user.target
"""


def supervisor_program(d: Deployment) -> str:
    """A supervisord program section: foreground (never --detach), stopped with TERM and 10 s grace.

    supervisord reads the daemon's stderr into DAEMONS_LOG_DIR/<name>.log, the same
    path detached mode writes, and rotates that file itself: don't also point logrotate
    at it.
    """
    return f"""\
; {d.unit_name}: generated by `manage.py daemonconfig {d.selector} --supervisor`.
; The daemon runs in the foreground and logs to stderr; supervisord writes that to
; stdout_logfile and rotates it (so no logrotate stanza for this file). supervisord
; refuses to start while that directory is missing: mkdir -p {d.log_file.parent}
[program:{d.unit_name}]
command={d.command}
directory={d.project_dir}
user={d.user}
autostart=true
autorestart=unexpected
exitcodes=0
startsecs=3
startretries=5
stopsignal=TERM
stopwaitsecs={d.stop_seconds}
redirect_stderr=true
stdout_logfile={d.log_file}
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=10
"""


def logrotate_stanza(d: Deployment) -> str:
    """Rotation for detached mode (`rundaemon --detach`), where the daemon writes its log file.

    logrotate moves the file and `create`s a new one; `signaldaemon NAME reopen-logs`
    in postrotate makes the daemon reopen its log, so no line is lost. It signals only
    the process holding the PID file's lock (never a PID left in a stale file); its
    exit status 3, "not running", is no error for a rotation.
    """
    # The run directory is named here, as in the unit, so the command finds the PID file
    # whatever the environment file says.
    reopen = " ".join(shlex.quote(str(part)) for part in
                      (f"DAEMONS_RUN_DIR={d.pid_file.parent}", d.python, d.project_dir / "manage.py", "signaldaemon",
                       d.name, "reopen-logs"))
    return f"""\
# {d.name}: generated by `manage.py daemonconfig {d.name} --logrotate`, for detached mode.
# Under systemd the log is in the journal; under supervisord, supervisord rotates it.
{d.log_file} {{
    su {d.user} {d.group}
    daily
    maxsize 100M
    rotate 14
    missingok
    notifempty
    compress
    delaycompress
    create 0640 {d.user} {d.group}
    postrotate
        {reopen} || [ $? -eq 3 ]
    endscript
}}
"""


RENDERERS = {"systemd": systemd_unit, "supervisor": supervisor_program, "logrotate": logrotate_stanza}
