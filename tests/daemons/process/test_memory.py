"""Memory a burst of work freed goes back to the system: when, and that it really does (RSS of a real process)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from daemons import Daemon, TickResult
from daemons.process.memory import MemoryReleaser
from daemons.process.runner import Runner
from tests.conftest import BASE_DIR, FakeClock


def test_the_start_up_is_released_at_the_first_tick_then_work_at_most_once_a_period() -> None:
    clock = FakeClock()
    released: list[float] = []
    releaser = MemoryReleaser(lambda: released.append(clock()), period=5.0, clock=clock)
    releaser.tick_ended(worked=False)  # the start-up's garbage
    assert released == [1000.0]
    releaser.tick_ended(worked=False)
    clock.advance(10)
    releaser.tick_ended(worked=False)
    assert released == [1000.0], "an idle daemon has nothing new to give back"
    releaser.tick_ended(worked=True)
    assert released == [1000.0, 1010.0], "a burst is released as soon as it is done"
    clock.advance(1)
    releaser.tick_ended(worked=True)  # a trickle: one release a period, not one per tick
    clock.advance(1)
    releaser.tick_ended(worked=False)
    assert released == [1000.0, 1010.0]
    clock.advance(3)
    releaser.tick_ended(worked=False)  # the first tick after the period gives back the trickle's work
    assert released == [1000.0, 1010.0, 1015.0]
    clock.advance(60)
    releaser.tick_ended(worked=False)
    assert released == [1000.0, 1010.0, 1015.0]


class Working(Daemon):
    name = "working"
    interval = 0

    def __init__(self, results: list[int], stop: threading.Event) -> None:
        super().__init__()
        self.results, self.stop = results, stop

    def tick(self, now) -> TickResult:
        processed = self.results.pop(0)
        if not self.results:
            self.stop.set()
        return TickResult(processed)


@pytest.mark.django_db(transaction=True)
def test_the_loop_releases_after_work_but_not_for_a_single_tick_run(stop_event, clock, fixed_now) -> None:
    released: list[int] = []
    daemon = Working([3, 0, 0], stop_event)
    runner = Runner(daemon, clock=clock, now=lambda: fixed_now, heartbeat=False,
                    memory=MemoryReleaser(lambda: released.append(len(daemon.results)), clock=clock))
    runner.run(stop_event)
    assert released == [2], "released once, right after the tick that worked"
    released.clear()
    stop_event.clear()
    daemon.results = [5]
    runner.run(stop_event, once=True)
    assert released == [], "`--once` exits after its tick: nothing to give back"


# Prints RSS in KiB before and after memory_release(), in a process that either freed 40 MiB of small
# blocks below one it kept (so malloc can't shrink its heap from the top), or read a whole table through
# Django's SQLite connection (whose page cache then holds 2 MiB).
RELEASE = """
import re, sys
import django
from django.conf import settings
settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sys.argv[2]}})
django.setup()
from django.db import connection
from daemons.process.memory import memory_release

def rss():
    return int(re.search(r"Rss:\\s+(\\d+)", open("/proc/self/smaps_rollup").read()).group(1))

if sys.argv[1] == "heap":
    blocks = [bytes(1000 + i % 7) for i in range(40000)]
    kept = bytes(1000)
    del blocks
else:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t WHERE length(b) > 0")
before = rss()
memory_release()
print(before, rss())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="reads RSS from /proc")
@pytest.mark.parametrize(("garbage", "kib"), [("heap", 30 * 1024), ("sqlite", 1024)])
def test_a_release_gives_back_freed_heap_and_the_sqlite_page_cache(tmp_path, garbage: str, kib: int) -> None:
    database = tmp_path / "db.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE t (b BLOB)")
        db.executemany("INSERT INTO t VALUES (randomblob(1000))", [()] * 8000)
    db.close()
    result = subprocess.run([sys.executable, "-c", RELEASE, garbage, str(database)], cwd=BASE_DIR,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(BASE_DIR)})
    assert result.returncode == 0, result.stderr
    before, after = map(int, result.stdout.split())
    assert before - after > kib, f"RSS {before} KiB before the release, {after} after"
