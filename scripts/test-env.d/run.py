"""Run a command (the test suite) in a test environment of its own, and leave nothing behind.

Usage: python scripts/test-env.d/run.py COMMAND [ARG...]     (what `make test` does)

1. Make a fresh private directory for the run, TEST_ENV_DIR, and point TMPDIR at it: the command's
   temporary files (pytest's tmp_path included) live there.
2. Run each scripts/test-env.d/*.sh with `up`, in name order. A script may append NAME=value lines to
   $TEST_ENV_DIR/env; they are added to the command's environment (how the tests find the PostgreSQL cluster).
3. Run the command. Its exit status is ours.
4. Whatever happened (success, failure, Ctrl-C, SIGTERM): run each script with `down` in reverse order, stop
   every process the run started that is still running, and remove TEST_ENV_DIR.

We make ourselves a child subreaper, so a process that detaches (a daemon, the PostgreSQL server, a browser)
stays our descendant: step 4 finds it wherever it went. Python's standard library only: this runs before
anything else is known to work.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PR_SET_CHILD_SUBREAPER = 36
STOP_GRACE = 10.0


class Interrupt:
    """Remembers the signals received; the handlers only set flags, the main flow decides."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.command: int | None = None
        # The signal that stops the command: SIGINT lets pytest tear its fixtures down.
        self.stop_signal = signal.SIGINT

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            # A run started as a background job has SIGINT ignored: so be it, for us and the command, which
            # inherits that. Only SIGTERM stops the command then; our clean-up does what its teardown did not.
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self._handle)
            elif signum == signal.SIGINT:
                self.stop_signal = signal.SIGTERM

    def _handle(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        # Ctrl-C reaches the whole process group, the command included. A SIGTERM or SIGHUP sent to us alone
        # is passed on.
        if signum != signal.SIGINT and self.command is not None:
            try:
                os.kill(self.command, self.stop_signal)
            except ProcessLookupError:
                pass


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print(f"run.py: could not become a subreaper (errno {ctypes.get_errno()}); detached processes may "
              "escape the clean-up", file=sys.stderr)


def scripts() -> list[Path]:
    return sorted(HERE.glob("*.sh"))


def read_env(env_file: Path) -> dict[str, str]:
    """The NAME=value lines the scripts recorded; a later line for a name wins."""
    found: dict[str, str] = {}
    if env_file.exists():
        for line in env_file.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name:
                found[name] = value
    return found


def set_up(env: dict[str, str], interrupt: Interrupt) -> int:
    """Run every script's `up`; 0 when all succeeded, else the failing exit status (130 when interrupted)."""
    for script in scripts():
        code = subprocess.run(["bash", str(script), "up"], env=env).returncode
        if interrupt.signals:
            return 130
        if code != 0:
            return code
    return 0


def run_command(command: list[str], env: dict[str, str], interrupt: Interrupt) -> int:
    """Start the command and reap every child until it exits; its exit status, shell style.

    Orphans are reparented to us while the command runs: waiting on any child reaps them at once, so a
    test never sees a stopped daemon linger as a zombie.
    """
    try:
        pid = os.posix_spawnp(command[0], command, env)
    except OSError as exc:
        print(f"run.py: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    interrupt.command = pid
    while True:
        reaped, status = os.waitpid(-1, 0)
        if reaped == pid:
            interrupt.command = None
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command name) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (int(fields[1]), fields[0], name)
    return table


def descendants(root: int) -> dict[int, str]:
    """Our live descendants (zombies excluded), pid -> command name."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state, _name) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = {}, [root]
    while stack:
        for child in children.get(stack.pop(), []):
            stack.append(child)
            if table[child][1] != "Z":
                found[child] = table[child][2]
    return found


def reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_leftovers() -> dict[int, str]:
    """SIGTERM every live descendant, SIGKILL those still there after STOP_GRACE; what was found."""
    me = os.getpid()
    leftovers = descendants(me)
    for signum, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
        deadline = time.monotonic() + grace
        while True:
            remaining = descendants(me)
            if not remaining or time.monotonic() >= deadline:
                break
            leftovers.update(remaining)
            for pid in remaining:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
            reap()
        if not remaining:
            break
    reap()
    return leftovers


def tear_down(env: dict[str, str], run_dir: Path) -> None:
    """Every script's `down`, then the leftover processes, then the run's directory."""
    for script in reversed(scripts()):
        # In a process group of its own: a second Ctrl-C must not cut the server's shutdown short.
        result = subprocess.run(["bash", str(script), "down"], env=env, process_group=0)
        if result.returncode != 0:
            print(f"run.py: {script.name} down exited with {result.returncode}", file=sys.stderr)
    leftovers = stop_leftovers()
    if leftovers:
        listed = ", ".join(f"{pid} ({name})" for pid, name in sorted(leftovers.items()))
        print(f"run.py: stopped what the run left running: {listed}", file=sys.stderr)
    shutil.rmtree(run_dir, onerror=lambda _f, path, exc: print(f"run.py: could not remove {path}: {exc[1]}",
                                                               file=sys.stderr))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: run.py COMMAND [ARG...]", file=sys.stderr)
        return 2
    interrupt = Interrupt()
    interrupt.install()
    become_subreaper()
    # Short, since sockets live under it (108 bytes at most), and traversable, so that a test can hand a
    # directory in it to another user (a daemon run with --user).
    run_dir = Path(tempfile.mkdtemp(prefix="dktest-"))
    run_dir.chmod(0o711)
    base_env = {**os.environ, "TEST_ENV_DIR": str(run_dir)}
    try:
        code = set_up(base_env, interrupt)
        if code == 0:
            env = {**base_env, **read_env(run_dir / "env"), "TMPDIR": str(run_dir)}
            code = run_command(argv, env, interrupt)
    finally:
        tear_down(base_env, run_dir)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
