"""daemonconfig: the systemd unit, supervisord program and logrotate stanza, each tried for real."""
from __future__ import annotations

import configparser
import grp
import gzip
import io
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from daemons.process import pidfile
from tests.conftest import wait_for
from tests.prerequisites import missing

BASE_DIR = Path(settings.BASE_DIR)
DEPLOY = BASE_DIR / "deploy"
ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name
EXAMPLE_ARGS = ["--project-dir", "/srv/signup_site", "--user", "signup", "--group", "signup"]


def systemd_analyze() -> str:
    """The systemd-analyze binary (scripts/test-env.d/systemd-analyze.sh installs it as root)."""
    found = shutil.which("systemd-analyze")
    if found is None:
        missing("systemd-analyze is missing; run `bash scripts/test-env.d/systemd-analyze.sh` as root "
                "(it installs Debian's systemd package)")
    return found


class SystemdUnit(configparser.ConfigParser):
    """A unit file's sections; its keys keep their case, as systemd's are case-sensitive."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def daemonconfig(*args: str) -> str:
    out = io.StringIO()
    call_command("daemonconfig", *args, stdout=out)
    return out.getvalue()


def in_project_dirs(project):
    return override_settings(DAEMONS_RUN_DIR=project.run_dir, DAEMONS_LOG_DIR=project.log_dir)


# deploy/production.env's directories: the examples must agree with it (test_settings_production checks that).
@override_settings(DAEMONS_RUN_DIR=Path("/run/signup_site"), DAEMONS_LOG_DIR=Path("/var/log/signup_site"))
@pytest.mark.parametrize(("kind", "filename"), [("--systemd", "onboarding.service"),
                                                ("--supervisor", "onboarding.supervisor.conf"),
                                                ("--logrotate", "onboarding.logrotate")])
def test_the_examples_in_deploy_are_what_daemonconfig_prints(kind, filename) -> None:
    assert (DEPLOY / filename).read_text() == daemonconfig("onboarding", kind, *EXAMPLE_ARGS), (
        f"deploy/{filename} is stale: regenerate it with "
        f"`manage.py daemonconfig onboarding {kind} {' '.join(EXAMPLE_ARGS)}`"
    )


def test_systemd_unit_is_type_notify_and_runs_the_venv_python_in_the_foreground(tmp_path) -> None:
    text = daemonconfig("onboarding", "--systemd", *EXAMPLE_ARGS, "--watchdog", "45")
    unit = SystemdUnit(strict=False, interpolation=None)
    unit.read_string(text)
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["WatchdogSec"] == "45"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "signup" and service["Group"] == "signup"
    assert service["WorkingDirectory"] == "/srv/signup_site"
    assert service["EnvironmentFile"] == "-/srv/signup_site/.env"
    assert service["RuntimeDirectory"] == "signup_site"
    # The PID file is in the runtime directory, where the kit puts it (DAEMONS_RUN_DIR from the environment).
    assert service["Environment"] == "DAEMONS_RUN_DIR=/run/signup_site"
    assert service["PIDFile"] == "/run/signup_site/onboarding.pid"
    assert service["ExecStart"] == "/srv/signup_site/.venv/bin/python /srv/signup_site/manage.py rundaemon onboarding"
    assert "--detach" not in text
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("kind", ["--systemd", "--supervisor", "--logrotate"])
def test_the_files_name_the_interpreter_that_ran_daemonconfig(kind, tmp_path) -> None:
    """Not an assumed PROJECT/.venv/bin/python: the one running the command has the project installed."""
    script = f"from django.core.management import call_command; call_command('daemonconfig', 'counter', {kind!r})"
    # A virtualenv's python is a symbolic link to the system's: the file must name the link, not its target.
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    result = subprocess.run([str(venv_python), "-c", f"import django; django.setup(); {script}"], cwd=BASE_DIR,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
                                 "PYTHONPATH": os.pathsep.join(filter(None, sys.path))})
    assert result.returncode == 0, result.stderr
    assert f"{venv_python} {BASE_DIR}/manage.py " in result.stdout
    assert ".venv" not in result.stdout


@pytest.mark.parametrize("every", [False, True])
def test_the_units_pid_file_is_the_one_the_daemon_writes_in_the_runtime_directory(every, monkeypatch) -> None:
    from daemons.process import supervisor
    from daemons.process.paths import RunPaths

    args = ["--all"] if every else ["counter"]
    unit = SystemdUnit(strict=False, interpolation=None)
    unit.read_string(daemonconfig(*args, "--systemd", *EXAMPLE_ARGS))
    service = unit["Service"]
    run_dir = Path("/run") / service["RuntimeDirectory"]
    assert service["Environment"] == f"DAEMONS_RUN_DIR={run_dir}"
    # What the daemon started by this unit computes, with the unit's environment and the project's settings.
    monkeypatch.setenv("DAEMONS_RUN_DIR", str(run_dir))
    with override_settings(DAEMONS_RUN_DIR="/elsewhere/run"):
        expected = supervisor.pid_path() if every else RunPaths.for_daemon("counter").pid
    assert Path(service["PIDFile"]) == expected and expected.parent == run_dir


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path) -> None:
    # Real paths, so verify can check that ExecStart is executable.
    text = daemonconfig("onboarding", "--systemd", "--project-dir", str(BASE_DIR), "--python", sys.executable,
                        "--user", ME, "--group", MY_GROUP)
    assert f"ExecStart={sys.executable} {BASE_DIR}/manage.py rundaemon onboarding" in text
    analyze = systemd_analyze()
    path = tmp_path / "onboarding.service"
    path.write_text(text)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    # The check is real: a unit with a missing interpreter fails it.
    path.write_text(text.replace(sys.executable, "/nonexistent/python"))
    broken = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0 and "/nonexistent/python" in broken.stderr


def test_daemonconfig_refuses_an_unknown_daemon_and_a_missing_kind() -> None:
    result = subprocess.run([sys.executable, "manage.py", "daemonconfig", "nope", "--systemd"], cwd=BASE_DIR,
                            capture_output=True, text=True, timeout=30, env={**os.environ})
    assert result.returncode == 1 and result.stderr.strip().startswith("CommandError: unknown daemon 'nope'")
    result = subprocess.run([sys.executable, "manage.py", "daemonconfig", "onboarding"], cwd=BASE_DIR,
                            capture_output=True, text=True, timeout=30, env={**os.environ})
    assert result.returncode == 2
    assert "one of the arguments --systemd --supervisor --logrotate is required" in result.stderr


@pytest.mark.process
def test_supervisord_runs_the_generated_program_and_stops_it(project) -> None:
    with in_project_dirs(project):
        program = daemonconfig("counter", "--supervisor", "--user", ME)  # its own interpreter by default
    assert "--detach" not in program and "stopsignal=TERM" in program and "stopwaitsecs=10" in program
    if os.getuid() != 0:  # supervisord can switch users only when it runs as root
        program = "\n".join(line for line in program.splitlines() if not line.startswith("user="))
    tmp = project.tmp
    conf = tmp / "supervisord.conf"
    conf.write_text(f"""\
[unix_http_server]
file={tmp}/supervisor.sock

[supervisord]
nodaemon=true
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock

{program}
""")
    bin_dir = Path(sys.executable).parent
    ctl = [str(bin_dir / "supervisorctl"), "-c", str(conf)]
    project.log_dir.mkdir()  # as the section's comment says: supervisord needs the directory
    output = tmp / "supervisord.out"
    with open(output, "wb") as sink:
        supervisord = subprocess.Popen([str(bin_dir / "supervisord"), "-c", str(conf)], env=project.env,
                                       stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    try:
        pid_path = project.pid_file("counter")
        wait_for(lambda: pidfile.is_locked(pid_path) or supervisord.poll() is not None, timeout=20,
                 message="the daemon to hold its PID lock")
        assert supervisord.poll() is None, output.read_text()
        holder = pidfile.read_holder(pid_path)
        reported = subprocess.run([*ctl, "pid", "counter"], capture_output=True, text=True, timeout=30)
        assert holder is not None and reported.stdout.strip() == str(holder)
        # The daemon logs to stderr; supervisord writes it to the daemon's usual log path.
        log = project.log_file("counter")
        wait_for(lambda: log.exists() and "counted 1 tick" in log.read_text(), timeout=20, message="ticks in the log")

        stopped = subprocess.run([*ctl, "stop", "counter"], capture_output=True, text=True, timeout=30)
        assert stopped.returncode == 0 and "counter: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not pidfile.is_locked(pid_path)
        assert "stopped" in log.read_text().splitlines()[-1]
        status = subprocess.run([*ctl, "status", "counter"], capture_output=True, text=True, timeout=30)
        assert "STOPPED" in status.stdout
    finally:
        subprocess.run([*ctl, "shutdown"], capture_output=True, timeout=30)
        try:
            supervisord.wait(timeout=15)
        except subprocess.TimeoutExpired:
            supervisord.kill()
            supervisord.wait()


def _ticks_logged(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.endswith("counted 1 tick") or "counted 1 tick in " in line)


@pytest.mark.process
def test_logrotate_with_the_generated_stanza_loses_no_line(project) -> None:
    logrotate = shutil.which("logrotate") or ("/usr/sbin/logrotate" if Path("/usr/sbin/logrotate").exists() else None)
    if logrotate is None:
        missing("logrotate is missing; run `bash scripts/test-env.d/logrotate.sh` as root (it installs it)")
    ticks = project.tmp / "ticks.txt"
    project.start("counter", env={"TESTAPP_INTERVAL": "0.01", "TESTAPP_TICKS_FILE": str(ticks)})
    log = project.log_file("counter")
    with in_project_dirs(project):
        stanza = daemonconfig("counter", "--logrotate", "--user", ME, "--group", MY_GROUP)
    conf = project.tmp / "logrotate.conf"
    conf.write_text(stanza)
    state = project.tmp / "logrotate.state"

    for rotation in (1, 2):
        wait_for(lambda: _ticks_logged(log.read_text()) >= 20, message="ticks logged before rotating")
        # postrotate runs `manage.py signaldaemon`: it needs this project's settings and run directory.
        result = subprocess.run([logrotate, "-s", str(state), "-f", str(conf)], capture_output=True, text=True,
                                timeout=60, env=project.env)
        assert result.returncode == 0, result.stderr
        # The daemon got the HUP and writes to the new file.
        wait_for(lambda: "reopened log files" in log.read_text(), message=f"the reopen after rotation {rotation}")
        assert (log.stat().st_mode & 0o777) == 0o640

    wait_for(lambda: _ticks_logged(log.read_text()) >= 10, message="ticks in the newest file")
    stopped = project.manage("stopdaemon", "counter")
    assert stopped.returncode == 0, stopped.stderr

    rotated_plain = log.with_name(log.name + ".1")
    rotated_gzip = log.with_name(log.name + ".2.gz")
    assert rotated_plain.exists() and rotated_gzip.exists()
    texts = [log.read_text(), rotated_plain.read_text(), gzip.decompress(rotated_gzip.read_bytes()).decode()]
    written = len(ticks.read_text().splitlines())
    assert written > 40
    assert sum(_ticks_logged(text) for text in texts) == written


def test_all_gives_the_supervisors_unit_which_systemd_accepts(tmp_path) -> None:
    from daemons import conf

    text = daemonconfig("--all", "--systemd", "--project-dir", str(BASE_DIR), "--python", sys.executable,
                        "--user", ME, "--group", MY_GROUP)
    unit = SystemdUnit(strict=False, interpolation=None)
    unit.read_string(text)
    service = unit["Service"]
    assert service["ExecStart"] == f"{sys.executable} {BASE_DIR}/manage.py rundaemon --all"
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main" and service["KillMode"] == "mixed"
    # systemd must not kill the children while the supervisor still waits for their stop deadline.
    assert int(service["TimeoutStopSec"]) > conf.stop_wait()
    name = f"{BASE_DIR.name}-daemons"
    assert f"systemctl enable --now {name}\n" in text
    analyze = systemd_analyze()
    path = tmp_path / f"{name}.service"
    path.write_text(text)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_all_and_a_name_are_one_line_errors() -> None:
    for args in (["--all", "onboarding", "--systemd"], ["--systemd"]):
        result = subprocess.run([sys.executable, "manage.py", "daemonconfig", *args], cwd=BASE_DIR,
                                capture_output=True, text=True, timeout=30, env={**os.environ})
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("CommandError: ")
