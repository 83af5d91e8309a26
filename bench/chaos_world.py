"""What a chaos run (bench/chaos.py) runs and acts on: hosts, their daemons, the SMTP sink, the signups.

Two "hosts" share the machine: each has its own host name (a UTS namespace: `socket.gethostname()`
is what the product calls a host), its own run and log directories, and its own clock (libfaketime,
whose offset a fault rewrites while the processes run). Host A runs the supervisor (`rundaemon
--all`) and a standalone onboarding instance 1; host B runs onboarding instance 0. Each process
runs in the foreground, as systemd runs it, and the harness restarts one that dies, as systemd would.
"""
from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from daemons.process import pidfile
from daemons.process.paths import stem
from tests.customers.conftest import SinkHandler, SmtpSink
from tests.webserver import Server

PY = sys.executable
FAKETIME_GLOB = "/usr/lib/*/faketime/libfaketimeMT.so.1"


def faketime_library() -> str:
    """libfaketime's path, installing Debian's `faketime` package first when it is missing."""
    from bench.harness.servers import apt_install

    found = sorted(glob.glob(FAKETIME_GLOB))
    if not found:
        apt_install("faketime")
        found = sorted(glob.glob(FAKETIME_GLOB))
    if not found:
        raise RuntimeError(f"libfaketime still missing after apt-get install faketime (looked for {FAKETIME_GLOB})")
    return found[0]


@dataclass
class Host:
    """One "host": a host name, run and log directories, and a clock offset the processes read at run time."""

    name: str
    run_dir: Path
    log_dir: Path
    clock_file: Path
    env: dict[str, str]

    @classmethod
    def make(cls, name: str, run_root: Path, log_root: Path, base_env: dict[str, str], faketime: str) -> Host:
        run_dir, log_dir = run_root / name / "run", log_root / name / "log"
        run_dir.mkdir(parents=True)
        log_dir.mkdir(parents=True)
        clock_file = run_root / name / "clock"
        clock_file.write_text("+0\n")
        env = {
            **base_env,
            "DAEMONS_RUN_DIR": str(run_dir),
            "DAEMONS_LOG_DIR": str(log_dir),
            # The offset is read from the file at every call: a fault changes this host's clock as it runs.
            # Monotonic clocks stay true, as they do when an NTP step moves a real host's wall clock.
            "LD_PRELOAD": faketime,
            "FAKETIME_TIMESTAMP_FILE": str(clock_file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        return cls(name, run_dir, log_dir, clock_file, env)

    def skew(self, seconds: int) -> None:
        # Written whole and renamed: a process never reads half an offset.
        partial = self.clock_file.with_suffix(".new")
        partial.write_text(f"{seconds:+d}s\n")
        partial.replace(self.clock_file)

    def command(self, *args: str) -> list[str]:
        """`manage.py ARGS` on this host: in a UTS namespace whose host name is this host's."""
        namespace = ["unshare", "--uts"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--uts"]
        return [*namespace, "sh", "-c", 'hostname "$0" && exec "$@"', self.name, PY, "manage.py", *args]

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        from tests.conftest import BASE_DIR

        # The operator's commands run with the true clock: libfaketime 0.9.10 with a true monotonic clock makes
        # Python's time.sleep() fail with EINVAL (its clock_nanosleep wrapper), which only daemons escape.
        env = {k: v for k, v in self.env.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}
        return subprocess.run(self.command(*args), cwd=BASE_DIR, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def holder(self, name: str, instance: int = 0) -> int | None:
        """The PID of the process holding daemon `name`'s lock on this host, or None."""
        return pidfile.read_holder(self.run_dir / f"{stem(name, instance)}.pid", wait=0)

    def holders(self) -> list[int]:
        """The PIDs that this host's PID files name and whose locks they hold."""
        found = (pidfile.read_holder(path, wait=0) for path in sorted(self.run_dir.glob("*.pid")))
        return [pid for pid in found if pid is not None]

    def leftovers(self) -> list[str]:
        """PID files and sockets left in the run directory (after everything stopped there should be none)."""
        return sorted(path.name for path in self.run_dir.iterdir() if path.suffix in (".pid", ".sock")
                      or path.is_socket())


@dataclass
class Service:
    """A foreground daemon process on a host, restarted a short while after it dies unless we are stopping."""

    label: str
    host: Host
    args: tuple[str, ...]
    supervisor: bool = False
    process: subprocess.Popen | None = None
    restart_at: float | None = None
    starts: int = 0
    expected_exit: bool = False
    unexpected_exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        from tests.conftest import BASE_DIR

        log = (self.host.log_dir.parent / f"{self.label}.stderr").open("a")
        # A session of its own: Ctrl-C reaches the harness alone, which stops these in order.
        self.process = subprocess.Popen(self.host.command(*self.args), cwd=BASE_DIR, env=self.host.env,
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        log.close()
        self.starts += 1
        self.restart_at = None
        self.expected_exit = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def kill(self) -> bool:
        """kill -9; whether there was a process to kill."""
        pid = self.pid
        if pid is None:
            return False
        self.expected_exit = True
        os.kill(pid, signal.SIGKILL)
        return True

    def watch(self, now: float, delay: Callable[[], float], stopping: bool) -> None:
        """Reap a dead process and schedule its restart; start it again once the delay has passed."""
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            if not self.expected_exit:
                self.unexpected_exits.append(code)
            self.process = None
            if not stopping:
                self.restart_at = now + delay()
        if self.process is None and self.restart_at is not None and now >= self.restart_at and not stopping:
            self.start()


class Sink:
    """The SMTP sink the tests use (a real aiosmtpd server that records each message before it replies),
    with the behaviours a fault switches on and off while it runs."""

    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.server = SmtpSink(self.handler)
        self.up = False

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()
        self.up = True

    def stop(self) -> None:
        self.up = False
        self.server.stop()

    def slow_data(self, seconds: float) -> None:
        self.handler.delay = seconds

    def refuse_everyone(self, reply: str) -> None:
        with self.handler.lock:
            self.handler.reject_all = reply

    def refuse(self, address: str, reply: str) -> None:
        with self.handler.lock:
            self.handler.reject[address.lower()] = (reply, None)

    def normal(self) -> None:
        """Quick replies and no refusal for everyone; addresses refused one by one stay refused."""
        self.handler.delay = 0.0
        self.refuse_everyone("")
        if not self.up:
            self.start()

    def copies(self) -> dict[str, list[tuple[str, float]]]:
        """Recipient -> the Message-ID of each copy the server stored, and when (time.monotonic())."""
        found: dict[str, list[tuple[str, float]]] = {}
        for message in self.server.received():
            for address in message.to:
                found.setdefault(address, []).append((message.message_id.strip(), message.at))
        return found


@dataclass
class SignupStats:
    attempted: int = 0
    accepted: int = 0
    gave_up: int = 0
    retried: int = 0
    statuses: Counter = field(default_factory=Counter)


class Signups:
    """Signups at `rate` a second through the real site: the signup form, POSTed with its CSRF token.

    Paced to a schedule (a late signup is not followed by a burst); a request that fails (the database
    restarting, say) is sent again, up to RETRIES times, with the same address.
    """

    RETRIES = 5
    WORKERS = 4

    def __init__(self, server: Server, rate: float, tag: str, refuse_some: Callable[[str], None]) -> None:
        self.server = server
        self.rate = rate
        self.tag = tag
        self.refuse_some = refuse_some
        self.stats = SignupStats()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.next_index = 0
        self.next_at = 0.0

    def start(self) -> None:
        self.token = self.server.csrf_token()
        self.next_at = time.monotonic()
        for number in range(self.WORKERS):
            thread = threading.Thread(target=self._work, name=f"signups-{number}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def _take(self) -> tuple[int, float]:
        with self.lock:
            now = time.monotonic()
            if self.next_at < now - 1.0:
                self.next_at = now  # more than a second behind: the backlog is dropped, not burst
            index, at = self.next_index, self.next_at
            self.next_index += 1
            self.next_at += 1.0 / self.rate
            return index, at

    def _work(self) -> None:
        while not self.stop.is_set():
            index, at = self._take()
            if self.stop.wait(max(0.0, at - time.monotonic())):
                return
            address = f"c{index}-{self.tag}@chaos.example"
            self.refuse_some(address)
            self._post(index, address)

    def _post(self, index: int, address: str) -> None:
        from urllib.parse import urlencode

        body = urlencode({"csrfmiddlewaretoken": self.token, "name": f"Customer {index}", "email": address}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        with self.lock:
            self.stats.attempted += 1
        for attempt in range(self.RETRIES + 1):
            try:
                status = self.server.request("POST", "/", body, headers, keep_cookies=False).status
            except OSError:
                status = 0
            with self.lock:
                self.stats.statuses[status] += 1
                if status == 302:
                    self.stats.accepted += 1
                    return
                if attempt == self.RETRIES:
                    self.stats.gave_up += 1
                    return
                self.stats.retried += 1
            if self.stop.wait(0.5 + random.random()):
                return
