"""`rundaemon --reload`: run a daemon again, gracefully, each time its code changes (development only).

Built on Django's autoreloader, as `runserver` is, with two differences a daemon needs:
the daemon keeps the child's main thread (its signal handlers can only live there), and
Django's file watcher runs beside it; and a change, Ctrl-C or SIGTERM stops the daemon
gracefully instead of killing it.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType

from django.utils import autoreload

from daemons.process.exits import Exit

logger = logging.getLogger("daemons.reload")

# The exit status that asks the watching parent for a new child (Django's convention).
EXIT_RELOAD = Exit.RELOAD


def run_with_reloader(run: Callable[[], int]) -> int:
    """Run `run()` (the daemon, in the foreground) in a child that is started again on each code change.

    In the parent this returns the exit status of the last child once it ends for any
    other reason than a code change. In the child it returns `EXIT_RELOAD` after a change
    stopped the daemon, else `run()`'s own status; the caller exits with it.
    """
    if is_child():
        return _child(run)
    return _parent()


def _parent() -> int:
    """Start the child again each time it exits with EXIT_RELOAD; pass Ctrl-C and SIGTERM on to it."""
    env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true"}
    args = autoreload.get_child_arguments()
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    # The child has its own process group, so a Ctrl-C reaches it once, through us: two
    # would be a second stop signal, which forces the daemon out.
    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            child = subprocess.Popen(args, env=env, close_fds=False, process_group=0)
            code = child.wait()
            if stopping and code == EXIT_RELOAD:
                return 0  # a change and a stop at once: the daemon stopped gracefully all the same
            if code != EXIT_RELOAD or stopping:
                # A child killed by a signal (the OOM killer's SIGKILL) is reported as a shell does: 128 + N.
                return 128 - code if code < 0 else code
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _child(run: Callable[[], int]) -> int:
    """Run the daemon in this (main) thread and Django's file watcher beside it."""
    changed = threading.Event()

    def on_change(sender: object, file_path: object, **kwargs: object) -> bool:
        if not changed.is_set():
            changed.set()
            logger.info("%s changed; restarting the daemon", file_path, extra={"action": "reloading"})
            os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own graceful stop
        return True  # handled: Django's reloader must not sys.exit() its thread

    autoreload.file_changed.connect(on_change, dispatch_uid="daemons.reload")
    reloader = autoreload.get_reloader()
    threading.Thread(target=reloader.run, args=(threading.main_thread(),), name="daemons-reloader",
                     daemon=True).start()
    code = run()
    return EXIT_RELOAD if changed.is_set() else code



def is_child() -> bool:
    """True in the process that runs the daemon under `--reload` (the watching parent's child)."""
    return os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true"
