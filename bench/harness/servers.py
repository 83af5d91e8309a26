"""The servers a benchmark needs, each on a free loopback port in a temporary directory.

Each `start_*` returns a `Server`; `Server.stop()` stops that server and removes its
directory, and stops nothing else. `ServerSet` stops everything it started, in reverse,
also after an exception or Ctrl-C.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bench.harness.systems import ROOT
from tests.support.net import free_port
from tests.support.processes import terminate

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


# Servers start in sessions of their own: Ctrl-C reaches only the harness, which then stops
# them after the workers that use them.


class ServerError(Exception):
    """A server could not be installed or started; the message says which and why."""


def wait_for_port(port: int, proc: subprocess.Popen | None, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise ServerError(f"{what} exited with status {proc.returncode} before listening") from None
            if time.monotonic() > deadline:
                raise ServerError(f"{what} did not listen on port {port} within {timeout:.0f} s") from None
            time.sleep(0.05)


@dataclass
class Server:
    name: str
    port: int
    directory: Path
    stopper: Callable[[], None]
    pid: int | None = None
    version: str = ""
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        try:
            self.stopper()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _stop_process(proc: subprocess.Popen, log: IO[str]) -> Callable[[], None]:
    """A `Server.stop` for `proc`: terminate it, then close the log it writes to."""
    def stop() -> None:
        terminate(proc, timeout=10)
        log.close()

    return stop


def start_smtp_sink() -> Server:
    directory = Path(tempfile.mkdtemp(prefix="bench-smtp-"))
    port = free_port()
    log = open(directory / "sink.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "bench.harness.smtp_sink", str(port)], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("smtp sink", port, directory, _stop_process(proc, log), pid=proc.pid)
    try:
        wait_for_port(port, proc, "the SMTP sink")
    except BaseException:
        server.stop()
        raise
    return server


def apt_install(package: str) -> None:
    """Install Debian's `package` with apt-get, which only root may do."""
    if os.geteuid() != 0:
        raise ServerError(f"{package} is not installed (apt-get install {package}, as root)")
    print(f"installing {package} (apt-get install {package})", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        if subprocess.run(command, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise ServerError(f"could not install {package} ({' '.join(command)} failed)")


def redis_binary() -> str:
    """redis-server's path, installing Debian's package first when it is missing."""
    if not shutil.which("redis-server"):
        apt_install("redis-server")
    found = shutil.which("redis-server")
    if not found:
        raise ServerError("redis-server still missing after apt-get install")
    return found


def start_redis() -> Server:
    binary = redis_binary()
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = free_port()
    log = open(directory / "redis.log", "w")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--save", "", "--appendonly", "no", "--daemonize", "no"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split()
    server = Server("redis", port, directory, _stop_process(proc, log), pid=proc.pid,
                    version=next((word[2:] for word in version if word.startswith("v=")), ""))
    try:
        wait_for_port(port, proc, "redis-server")
    except BaseException:
        server.stop()
        raise
    return server


def redis_commands(port: int) -> int:
    """Commands the Redis server on `port` processed so far (this call's INFO included)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO stats\r\n")
        data = b""
        while b"total_commands_processed" not in data or not data.endswith(b"\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise ServerError("redis INFO had no total_commands_processed")


def start_postgres() -> Server:
    """A throwaway PostgreSQL 15 cluster; as root its programs run as the postgres user, as they must."""
    initdb = PG_BIN / "initdb"
    if not initdb.exists() and "PG_BIN" not in os.environ:
        apt_install("postgresql-15")
    if not initdb.exists():
        raise ServerError(f"PostgreSQL is not installed at {PG_BIN} (apt-get install postgresql-15, or set PG_BIN)")
    as_owner: list[str] = []
    directory = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        as_owner = ["runuser", "-u", "postgres", "--"]
        shutil.chown(directory, "postgres")
    data = directory / "data"
    port = free_port()
    pg_ctl = [*as_owner, str(PG_BIN / "pg_ctl"), "-D", str(data)]

    def stop() -> None:
        if (data / "postmaster.pid").exists():
            subprocess.run([*pg_ctl, "stop", "-m", "fast", "-w", "-t", "30"], capture_output=True)

    server = Server("postgresql", port, directory, stop)
    try:
        run = subprocess.run([*as_owner, str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust",
                              "-E", "UTF8", "--locale=C"], capture_output=True, text=True)
        if run.returncode != 0:
            raise ServerError(f"initdb failed: {run.stderr.strip()[-300:]}")
        # Loopback only and no Unix socket. Commits don't wait for the disk, like SQLite's
        # WAL with synchronous=NORMAL that the SQLite systems use.
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
                       "synchronous_commit = off\nmax_connections = 100\n")
        run = subprocess.run([*pg_ctl, "-l", str(directory / "server.log"), "-w", "-t", "60", "start"],
                             capture_output=True, text=True, start_new_session=True)
        if run.returncode != 0:
            raise ServerError(f"PostgreSQL did not start: {(directory / 'server.log').read_text()[-300:]}")
        server.version = subprocess.run([str(PG_BIN / "postgres"), "--version"], capture_output=True,
                                        text=True).stdout.split()[2]
        server.pid = int((data / "postmaster.pid").read_text().split()[0])
    except BaseException:
        server.stop()
        raise
    return server


def pg_create_database(port: int, name: str, template: str | None = None) -> str:
    """Create database `name` (copied from `template` if given); return its URL."""
    import psycopg

    with psycopg.connect(f"postgres://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return f"postgres://postgres@127.0.0.1:{port}/{name}"


class ServerSet:
    """Servers started for one benchmark run, stopped together in reverse order."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def add(self, server: Server) -> Server:
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        while self.servers:
            self.servers.pop().stop()
