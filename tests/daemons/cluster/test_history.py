"""Tick history: counted in memory, written about once a minute, read back per hour and as tick counters."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daemons.cluster.history import Recorder, hourly, tick_counters
from daemons.models import Heartbeat, TickMinute

T0 = datetime(2026, 11, 27, 12, 0, 5, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def recorder(**fields) -> Recorder:
    return Recorder(name=fields.pop("name", "counter"), host=fields.pop("host", "web1"), pid=fields.pop("pid", 77),
                    **fields)


def test_idle_ticks_within_a_minute_cost_no_query(django_assert_num_queries) -> None:
    rec = recorder()
    rec.record(T0, duration_ms=3, processed=2)  # the first tick is written at once
    with django_assert_num_queries(0):
        for second in range(1, 50):
            rec.record(T0 + timedelta(seconds=second), duration_ms=1)
    row = TickMinute.objects.get()
    assert (row.minute, row.ticks, row.processed, row.ticks_total) == (T0.replace(second=0), 1, 2, 1)


def test_a_new_minute_writes_the_last_one_and_counters_add_up() -> None:
    rec = recorder()
    for second in range(0, 120, 10):  # 12 ticks over two minutes, one of them failing
        rec.record(T0 + timedelta(seconds=second), duration_ms=5, processed=1, error=second == 30)
    rec.flush(T0 + timedelta(seconds=120))
    rows = list(TickMinute.objects.order_by("minute").values_list("minute", "ticks", "processed", "errors", "busy_ms"))
    assert rows == [(T0.replace(second=0), 6, 6, 1, 30), (T0.replace(second=0) + timedelta(minutes=1), 6, 6, 0, 30)]
    last = TickMinute.objects.order_by("minute").last()
    assert last is not None and last.ticks_total == 12


def test_a_restart_within_the_minute_adds_to_the_row_and_takes_over_the_counter() -> None:
    old, new = recorder(pid=10), recorder(pid=11)
    old.record(T0, duration_ms=1)
    old.record(T0 + timedelta(seconds=1), duration_ms=1)
    old.flush(T0 + timedelta(seconds=2))
    new.record(T0 + timedelta(seconds=3), duration_ms=1)
    row = TickMinute.objects.get()
    assert (row.ticks, row.pid, row.ticks_total) == (3, 11, 1)


def test_old_rows_are_pruned() -> None:
    TickMinute.objects.create(name="counter", host="web1", minute=T0 - timedelta(hours=26), pid=1, ticks=5)
    TickMinute.objects.create(name="counter", host="web1", minute=T0 - timedelta(hours=2), pid=1, ticks=5)
    recorder().record(T0, duration_ms=1)
    assert sorted(TickMinute.objects.values_list("ticks", flat=True)) == [1, 5]


def test_a_database_error_is_swallowed() -> None:
    from django.db import connection

    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE daemons_tickminute RENAME TO daemons_tickminute_gone")
    rec = recorder()
    rec.record(T0, duration_ms=1)  # does not raise
    assert rec.bucket is None and rec.ticks_total == 1


def test_hourly_sums_instances_and_hosts_and_fills_empty_hours() -> None:
    now = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
    for host, instance, minute, ticks in [("web1", 0, now, 3), ("web2", 1, now - timedelta(minutes=10), 4),
                                          ("web1", 0, now - timedelta(hours=5), 7),
                                          ("web1", 0, now - timedelta(hours=25), 100)]:
        TickMinute.objects.create(name="counter", instance=instance, host=host, minute=minute.replace(second=0),
                                  pid=1, ticks=ticks, processed=ticks * 2)
    series = hourly(now=now)
    assert list(series) == ["counter"]
    hours = series["counter"]
    assert len(hours) == 24 and hours[-1].start == datetime(2026, 11, 27, 12, tzinfo=UTC)
    assert [(h.start.hour, h.ticks, h.processed) for h in hours if h.ticks] == [(7, 7, 14), (12, 7, 14)]


def test_tick_counters_read_the_heartbeat_process_rows_only() -> None:
    started = T0 - timedelta(minutes=5)
    Heartbeat.objects.create(name="counter", host="web1", pid=42, started_at=started, last_heartbeat=T0)
    Heartbeat.objects.create(name="idle", host="web1", pid=43, started_at=started, last_heartbeat=T0)
    # the same PID in an earlier life of the daemon, and the newest row of this one
    TickMinute.objects.create(name="counter", host="web1", minute=started - timedelta(hours=3), pid=42, ticks_total=999)
    TickMinute.objects.create(name="counter", host="web1", minute=started.replace(second=0), pid=42, ticks_total=10)
    TickMinute.objects.create(name="counter", host="web1", minute=T0.replace(second=0), pid=42, ticks_total=25)
    assert tick_counters() == {("counter", 0, "web1"): 25, ("idle", 0, "web1"): 0}
