"""Signals as events: handlers only set flags, a wakeup fd ends the loop's wait, old handlers come back."""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from daemons.process import logs

if TYPE_CHECKING:
    from daemons.cluster.listen import Listener

logger = logging.getLogger("daemons.signals")


class SelfPipe:
    """A doorbell another thread sleeps on: `ring()` is safe from a signal handler, where a lock could deadlock.

    Rings that pile up before the sleeper looks are one ring. Use it as a context manager
    to close both ends on the way out.
    """

    def __init__(self) -> None:
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def ring(self) -> None:
        try:
            os.write(self._wfd, b"\0")
        except OSError:
            pass  # a full pipe already holds a ring

    def fileno(self) -> int:
        """The end to wait on (readable once rung)."""
        return self._rfd

    def write_fileno(self) -> int:
        """The end a ring writes to: what `signal.set_wakeup_fd` is given."""
        return self._wfd

    def drain(self) -> None:
        """Forget the rings so far, after a wait saw them."""
        _drain(lambda: os.read(self._rfd, 512))

    def close(self) -> None:
        os.close(self._rfd)
        os.close(self._wfd)

    def __enter__(self) -> SelfPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SignalStop:
    """The stop event of a real process, driven by signals and wake-up datagrams.

    Handlers only set flags; `signal.set_wakeup_fd` makes a signal end `wait()` at once.
    SIGHUP (reopen logs) and SIGUSR1 (toggle DEBUG) are acted on inside `wait()`, that is
    in the main loop, never in the handler, and then passed to `on_signal`. A stop
    calls `on_stop` at once, from the handler (a daemon's watch thread must start its stop
    deadline even while the main thread is stuck in a tick); a second SIGTERM or SIGINT
    during a graceful stop calls `force_exit`, unless it comes within `REPEAT_WINDOW` of
    the first: that is one request delivered twice. Those two are all a handler does beyond
    setting a flag. Create it with `installed()`, which puts the previous handlers back.
    """

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
    # timeout(1) signals its command and then its whole process group, and `kill PID; kill -- -PGID`
    # scripts do the same: the copy lands microseconds later. A person's second Ctrl-C, or a
    # second stopdaemon, comes far later than this.
    REPEAT_WINDOW = 0.5

    def __init__(self, force_exit: Callable[[], None] | None = None,
                 on_signal: Callable[[int], None] | None = None, on_stop: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.stop_requested_at: float | None = None
        self.force_exit = force_exit
        self.on_signal = on_signal
        self.on_stop = on_stop
        self._pending: set[int] = set()
        self._woken = False
        self._wake_socket: socket.socket | None = None
        self._listener: Listener | None = None
        self._pipe = SelfPipe()  # rung by every signal (`installed` makes it the wakeup fd) and by `set`

    def _handle(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            asked = self.stop_requested_at
            if asked is not None and self.force_exit is not None and self.clock() - asked >= self.REPEAT_WINDOW:
                self.force_exit()
            self.stop_requested_at = self.stop_requested_at or self.clock()
            if self.on_stop is not None:
                self.on_stop()
        else:
            self._pending.add(signum)

    def is_set(self) -> bool:
        return self.stop_requested_at is not None

    def set(self) -> None:
        self.stop_requested_at = self.stop_requested_at or self.clock()
        if self.on_stop is not None:
            self.on_stop()
        self._pipe.ring()  # wake a wait() in progress, as a signal would

    def attach(self, wake_socket: socket.socket | None) -> None:
        """Also end `wait()` when a datagram arrives on `wake_socket`."""
        self._wake_socket = wake_socket

    def attach_listener(self, listener: Listener | None) -> None:
        """Also end `wait()` when a notification arrives on `listener`, and reconnect it when due."""
        self._listener = listener

    def consume_wakeup(self) -> bool:
        """True once after a wake-up datagram ended a wait."""
        woken, self._woken = self._woken, False
        return woken

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` for a stop, a signal or a wake-up; True once a stop was requested.

        A wake-up is a datagram on the wake-up socket or notifications on the listener
        (however many arrived: one wake-up), or the listener's reconnection.
        """
        if self.is_set():
            return True
        self.poll(timeout)
        return self.is_set()

    def poll(self, timeout: float | None = None, fds: list[int] | None = None) -> list[int]:
        """Wait up to `timeout` for a signal, a wake-up or one of `fds` to be readable; act on the signals.

        Returns those of `fds` that are readable. Unlike `wait()`, it waits even once a
        stop was requested: a supervisor keeps watching its children while they stop.
        """
        listener = self._listener
        if listener is not None and listener.reconnect_if_due():
            # Notifications sent while nobody listened are lost: look for work once now.
            self._woken = True
            return []
        watched: list[int | socket.socket] = [self._pipe.fileno(), *(fds or [])]
        if self._wake_socket is not None:
            watched.append(self._wake_socket)
        listen_fd = listener.fileno() if listener is not None else None
        retry_in = listener.retry_in() if listener is not None else None
        if listen_fd is not None:
            watched.append(listen_fd)
        elif retry_in is not None:
            timeout = retry_in if timeout is None else min(timeout, retry_in)
        ready, _, _ = select.select(watched, [], [], timeout)
        if self._pipe.fileno() in ready:
            self._pipe.drain()
        if self._wake_socket is not None and self._wake_socket in ready:
            wake_socket = self._wake_socket
            _drain(lambda: wake_socket.recv(64))
            self._woken = True
        if listener is not None and listen_fd in ready and listener.drain():
            self._woken = True
        self._act_on_pending()
        return [fd for fd in fds or [] if fd in ready]

    def _act_on_pending(self) -> None:
        while self._pending:
            signum = self._pending.pop()
            if signum == signal.SIGHUP:
                if logs.reopen_files():
                    logger.info("reopened log files on SIGHUP", extra={"action": "logs_reopened"})
            elif signum == signal.SIGUSR1:
                level = logs.toggle_debug()
                logger.warning("log level is now %s", logging.getLevelName(level), extra={"action": "log_level"})
            if self.on_signal is not None:
                self.on_signal(signum)


def _drain(read: Callable[[], bytes]) -> None:
    try:
        while read():
            pass
    except BlockingIOError:
        pass


@contextmanager
def installed(force_exit: Callable[[], None] | None = None, *, extra: tuple[int, ...] = (),
              on_signal: Callable[[int], None] | None = None,
              on_stop: Callable[[], None] | None = None) -> Iterator[SignalStop]:
    """Install the handlers of a `SignalStop` for the duration of the block.

    `extra` signals (a supervisor's SIGCHLD) only end the wait and reach `on_signal`.
    On the way out the previous handlers and the previous wakeup fd are restored, so a
    process that runs a daemon (a supervisor's child, a test) gets its own back.
    """
    stop = SignalStop(force_exit=force_exit, on_signal=on_signal, on_stop=on_stop)
    old_wakeup_fd = signal.set_wakeup_fd(stop._pipe.write_fileno(), warn_on_full_buffer=False)
    old_handlers = {}
    try:
        for sig in (*SignalStop.HANDLED, *extra):
            old_handlers[sig] = signal.signal(sig, stop._handle)
        yield stop
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_wakeup_fd)
        stop._pipe.close()
