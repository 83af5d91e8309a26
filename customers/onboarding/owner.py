"""Who holds a claim: an onboarding process, named by its instance's PID lock, its host and itself."""
from __future__ import annotations

import hashlib
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.db.models import CharField, QuerySet, Value
from django.db.models.functions import Cast, Concat

from daemons import conf, wakeup
from daemons.cluster import heartbeat

if TYPE_CHECKING:
    from daemons.models import Heartbeat

# The onboarding daemon's registered name: signups and retries wake it by this name.
DAEMON_NAME = "onboarding"


def onboarding_wake() -> None:
    """Ask the running onboarding daemons to look for work now; never blocks or raises."""
    wakeup.wake(DAEMON_NAME)


def boot_id() -> str:
    """This kernel's boot id, shared by every container on the host; "" where there is none."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def instance_lock_key(instance: int, run_dir: Path | None = None) -> str:
    """A short name for the PID lock of onboarding instance `instance` on this host.

    Built from the boot id and the run directory's device and inode, not from hostnames:
    two checkouts on one host, or two containers sharing the host's network and hostname,
    have different run directories and so different keys, while a restart of the same
    instance (same kernel, same run directory) gets the same key.
    """
    directory = Path(run_dir) if run_dir is not None else conf.run_dir()
    try:
        stat = directory.stat()
        where = f"{stat.st_dev}:{stat.st_ino}"
    except OSError:  # not created yet (a daemon creates it before it locks): the path will do
        where = str(directory.resolve())
    raw = f"{boot_id()}:{where}:{DAEMON_NAME}:{instance}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Owner:
    """Who holds a claim: the PID lock of a daemon instance, its host and number (for people), and one process.

    `lock_key` (see `instance_lock_key`) is shared by every process that ever held that
    lock, so a process holding it knows any other claim with that key is a dead
    predecessor's. `token` is unique to this process (its PID and a random part, as PIDs
    repeat across containers and reboots). `str(owner)`, stored in `claimed_by`, is
    `lock_key/host/instance/pid-random`: `process_marker` is the part of it that the
    process's heartbeat row (host, instance, pid) names.
    """

    host: str
    instance: int
    lock_key: str
    token: str

    @property
    def prefix(self) -> str:
        return f"{self.lock_key}/"

    def __str__(self) -> str:
        return f"{self.prefix}{self.host}/{self.instance}/{self.token}"

    @property
    def pid(self) -> int:
        return int(self.token.partition("-")[0])

    def heartbeat_row(self) -> QuerySet[Heartbeat]:
        """The heartbeat row of the process this owner is (see `heartbeat.process_row`)."""
        return heartbeat.process_row(DAEMON_NAME, self.instance, host=self.host, pid=self.pid)

    def touch_heartbeat(self) -> None:
        """Stamp the heartbeat row of the process this owner is (see `heartbeat.touch`)."""
        heartbeat.touch(DAEMON_NAME, self.instance, host=self.host, pid=self.pid)

    @classmethod
    def current(cls, instance: int = 0, run_dir: Path | None = None) -> Owner:
        """The owner for this process, running onboarding instance `instance`."""
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        return cls(socket.gethostname(), instance, instance_lock_key(instance, run_dir), token)


def process_marker(host: str, instance: int, pid: int) -> str:
    """The part of `str(owner)` that names the process with this heartbeat row (see `Owner`)."""
    return f"/{host}/{instance}/{pid}-"


def process_marker_sql() -> Concat:
    """`process_marker` as SQL over a heartbeat row's host, instance and pid: for a subquery on the heartbeats."""
    text = CharField()
    return Concat(Value("/"), "host", Value("/"), Cast("instance", text), Value("/"), Cast("pid", text), Value("-"),
                  output_field=text)
