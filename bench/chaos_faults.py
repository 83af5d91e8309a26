"""The faults a chaos run injects, drawn at random from a seeded generator, and how each one ends.

Each kind says how many messages in flight it may duplicate (`FaultKind.duplicates`): a process
that dies, hangs or loses the database between "the server stored the email" and "the send is
recorded" may send its emails in flight (SENDS_IN_FLIGHT) again; a server that goes away
mid-DATA does the same to every instance's messages in flight. A refusal at RCPT stores nothing;
a skewed clock or a rotated log must duplicate nothing.
"""
from __future__ import annotations

import enum
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.chaos_world import Host, Service, Sink

# Each onboarding process has this many messages in flight: the ONBOARDING_SEND_CONCURRENCY that
# `bench.chaos.product_env` gives the run's daemons and this process alike.
SENDS_IN_FLIGHT = int(os.environ.get("ONBOARDING_SEND_CONCURRENCY", "1"))
# Seconds: how long the SMTP faults and the clock skew last, and how long DATA replies take.
SMTP_DOWN = 10.0
SLOW_DATA_REPLY = 20.0
SLOW_DATA_WINDOW = 25.0
REFUSAL_WINDOW = 15.0
SKEW = 60
SKEW_WINDOW = 30.0
# While a 550 fault lasts, this share of new signups get an address the server refuses for good.
REFUSED_SHARE = 0.2
# Seconds a resource is left healthy after a fault on it ends. Mail faults drawn back to back kept the server
# impaired 70% of a run, and the backlog then grew whatever the daemons did: a run of servers that never work
# measures nothing about the promise. With these rests the server works at least half the time.
SMTP_REST = 20.0
PG_REST = 15.0


class FaultKind(enum.StrEnum):
    KILL_INSTANCE = "kill_instance"
    KILL_SUPERVISOR = "kill_supervisor"
    KILL_CHILD = "kill_child"
    SIGSTOP = "sigstop"
    PG_RESTART = "pg_restart"
    SMTP_DOWN = "smtp_down"
    SMTP_SLOW_DATA = "smtp_slow_data"
    SMTP_TEMPFAIL = "smtp_tempfail"
    SMTP_RELAY_DENIED = "smtp_relay_denied"
    SMTP_REJECT_SOME = "smtp_reject_some"
    CLOCK_SKEW = "clock_skew"
    LOG_ROTATE = "log_rotate"

    @property
    def smtp(self) -> bool:
        return self.value.startswith("smtp_")


@dataclass
class Fault:
    kind: FaultKind
    at: float  # seconds since the run began
    target: str
    duplicates: int  # messages in flight this one fault may send twice


@dataclass
class World:
    """What the faults act on."""

    hosts: dict[str, Host]
    services: list[Service]
    sink: Sink
    pg_restart: Callable[[], None]
    hung_after: float  # seconds without a heartbeat after which an onboarding instance counts as dead


@dataclass
class Injector:
    """Draws a fault every `gap` seconds (uniform between the two bounds) and undoes each one when due.

    Only one SMTP behaviour, one skew per host and one database restart run at a time, and the mail
    server and the database rest a while after each fault (SMTP_REST, PG_REST): a draw that would
    overlap is drawn again. `finish()` ends every running fault at once.
    """

    world: World
    rng: random.Random
    gap: tuple[float, float]
    began: float = field(default_factory=time.monotonic)
    faults: list[Fault] = field(default_factory=list)
    endings: list[tuple[float, str, Callable[[], object]]] = field(default_factory=list)
    next_at: float = 0.0
    refusing: bool = False
    refused: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    restarting: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.next_at = self.began + self.rng.uniform(*self.gap)

    def counts(self) -> dict[str, int]:
        counted = Counter(fault.kind.value for fault in self.faults)
        return {kind.value: counted[kind.value] for kind in FaultKind}

    def duplicate_budget(self) -> int:
        return sum(fault.duplicates for fault in self.faults)

    def busy(self, resource: str) -> bool:
        return any(name == resource for _at, name, _undo in self.endings)

    def step(self, now: float) -> Fault | None:
        """End the faults that are due, and start a new one if its time has come."""
        for ending in [e for e in self.endings if e[0] <= now]:
            self.endings.remove(ending)
            ending[2]()
        if now < self.next_at:
            return None
        self.next_at = now + self.rng.uniform(*self.gap)
        for _ in range(20):
            kind = self.rng.choice(list(FaultKind))
            fault = self.start(kind, now)
            if fault is not None:
                self.faults.append(fault)
                return fault
        return None

    def finish(self) -> None:
        """Undo every running fault now, and wait for a database restart under way."""
        for ending in sorted(self.endings, key=lambda ending: ending[0]):
            ending[2]()
        self.endings.clear()  # the rests the undos began too
        if self.restarting is not None:
            self.restarting.join(timeout=180)
        self.refusing = False
        self.world.sink.normal()

    def later(self, delay: float, resource: str, undo: Callable[[], object], rest: float = 0.0) -> None:
        """Undo a fault on `resource` in `delay` seconds; the resource then stays busy for `rest` seconds."""
        def end() -> None:
            undo()
            if rest:
                self.endings.append((time.monotonic() + rest, resource, lambda: None))

        self.endings.append((time.monotonic() + delay, resource, end))

    def refuse_some(self, address: str) -> None:
        """Called before each signup: while a 550 fault lasts, refuse some new addresses for good."""
        if self.refusing and random.random() < REFUSED_SHARE:
            self.refused.add(address.lower())
            self.world.sink.refuse(address, "550 5.1.1 No such user here")

    def _onboarding_processes(self) -> list[tuple[str, int]]:
        found = []
        for service in self.world.services:
            if service.supervisor:
                pid = service.host.holder("onboarding")
                if pid is not None:
                    found.append((f"{service.host.name}/onboarding (supervised)", pid))
            elif service.pid is not None:
                found.append((service.label, service.pid))
        return found

    def start(self, kind: FaultKind, now: float) -> Fault | None:
        """Inject one fault of `kind`; None when it can't be injected now (its resource is busy, no target)."""
        at = round(now - self.began, 1)
        world, rng = self.world, self.rng
        if kind.smtp and self.busy("smtp"):
            return None
        if kind is FaultKind.KILL_INSTANCE:
            alive = [service for service in world.services if not service.supervisor and service.pid is not None]
            if not alive:
                return None
            victim = rng.choice(alive)
            victim.kill()
            return Fault(kind, at, victim.label, SENDS_IN_FLIGHT)
        if kind is FaultKind.KILL_SUPERVISOR:
            supervisors = [service for service in world.services if service.supervisor and service.pid is not None]
            if not supervisors:
                return None
            victim = rng.choice(supervisors)
            victim.kill()
            return Fault(kind, at, victim.label, SENDS_IN_FLIGHT)
        if kind is FaultKind.KILL_CHILD:
            children = [(service.host, name) for service in world.services if service.supervisor
                        for name in ("onboarding", "digest") if service.host.holder(name) is not None]
            if not children:
                return None
            host, name = rng.choice(children)
            pid = host.holder(name)
            if pid is None or not _signal(pid, signal.SIGKILL):
                return None
            return Fault(kind, at, f"{host.name}/{name} (pid {pid})", SENDS_IN_FLIGHT if name == "onboarding" else 0)
        if kind is FaultKind.SIGSTOP:
            processes = [(label, pid) for label, pid in self._onboarding_processes() if not self.busy(f"stop:{pid}")]
            if not processes:
                return None
            label, pid = rng.choice(processes)
            if not _signal(pid, signal.SIGSTOP):
                return None
            self.later(world.hung_after + 3.0, f"stop:{pid}", lambda: _signal(pid, signal.SIGCONT))
            return Fault(kind, at, f"{label} (pid {pid}) for {world.hung_after + 3.0:g} s", SENDS_IN_FLIGHT)
        if kind is FaultKind.PG_RESTART:
            if self.restarting is not None and self.restarting.is_alive() or self.busy("postgresql"):
                return None
            self.restarting = threading.Thread(target=self._pg_restart, name="pg-restart", daemon=True)
            self.restarting.start()
            return Fault(kind, at, "postgresql", SENDS_IN_FLIGHT * len(self._onboarding_processes()))
        if kind is FaultKind.SMTP_DOWN:
            world.sink.stop()
            self.later(SMTP_DOWN, "smtp", world.sink.normal, SMTP_REST)
            return Fault(kind, at, f"smtp for {SMTP_DOWN:g} s", SENDS_IN_FLIGHT * len(self._onboarding_processes()))
        if kind is FaultKind.SMTP_SLOW_DATA:
            world.sink.slow_data(SLOW_DATA_REPLY)
            self.later(SLOW_DATA_WINDOW, "smtp", world.sink.normal, SMTP_REST)
            return Fault(kind, at, f"DATA replies after {SLOW_DATA_REPLY:g} s, for {SLOW_DATA_WINDOW:g} s", 0)
        if kind is FaultKind.SMTP_TEMPFAIL:
            reply = rng.choice(["421 4.3.2 Service not available, closing channel", "451 4.3.0 Try again later"])
            world.sink.refuse_everyone(reply)
            self.later(REFUSAL_WINDOW, "smtp", world.sink.normal, SMTP_REST)
            return Fault(kind, at, f"{reply[:3]} for {REFUSAL_WINDOW:g} s", 0)
        if kind is FaultKind.SMTP_RELAY_DENIED:
            world.sink.refuse_everyone("554 5.7.1 Relay access denied")
            self.later(REFUSAL_WINDOW, "smtp", world.sink.normal, SMTP_REST)
            return Fault(kind, at, f"554 for {REFUSAL_WINDOW:g} s", 0)
        if kind is FaultKind.SMTP_REJECT_SOME:
            self.refusing = True
            self.later(REFUSAL_WINDOW, "smtp", self._stop_refusing, SMTP_REST)
            return Fault(kind, at, f"550 for {REFUSED_SHARE:.0%} of new addresses, for {REFUSAL_WINDOW:g} s", 0)
        if kind is FaultKind.CLOCK_SKEW:
            free = [host for host in world.hosts.values() if not self.busy(f"clock:{host.name}")]
            if not free:
                return None
            host = rng.choice(free)
            seconds = rng.choice([-SKEW, SKEW])
            host.skew(seconds)
            self.later(SKEW_WINDOW, f"clock:{host.name}", lambda: host.skew(0))
            return Fault(kind, at, f"{host.name} {seconds:+d} s for {SKEW_WINDOW:g} s", 0)
        if kind is FaultKind.LOG_ROTATE:
            host = rng.choice(list(world.hosts.values()))
            return Fault(kind, at, self._rotate(host), 0)
        raise AssertionError(kind)

    def _stop_refusing(self) -> None:
        self.refusing = False

    def _pg_restart(self) -> None:
        try:
            self.world.pg_restart()
        except Exception as exc:  # reported in the summary; the run goes on
            self.errors.append(f"PostgreSQL restart failed: {exc}")
        finally:
            self.later(PG_REST, "postgresql", lambda: None)

    def _rotate(self, host: Host) -> str:
        """Move the host's log directory aside as logrotate would, make a new one, and SIGHUP every daemon there."""
        rotated = host.log_dir.with_name(f"{host.log_dir.name}.{len(self.faults)}")
        host.log_dir.rename(rotated)
        host.log_dir.mkdir()
        # As logrotate's postrotate does: to the processes the PID files name, so a process still starting
        # (whose handlers are not installed yet, and whose PID file does not name it yet) is left alone.
        signalled = [pid for pid in host.holders() if _signal(pid, signal.SIGHUP)]
        return f"{host.name}: {rotated.name}, SIGHUP to {len(signalled)} processes"


def _signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False
