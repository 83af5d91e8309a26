"""The supervisor's preparation for its first forks (`children.prepared`): warmed, collector off, nothing written."""
from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from daemons.models import Heartbeat, TickMinute
from daemons.process import children


@pytest.fixture
def collector_restored() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.enable() if enabled else gc.disable()


@pytest.mark.django_db(transaction=True)
def test_the_first_forks_happen_warmed_with_the_collector_off_and_nothing_written(collector_restored) -> None:
    specs = children.child_specs(["counter", "idle"])
    gc.enable()
    with children.prepared(specs):
        # What `fork_child` then freezes: no collection frees objects and leaves holes in shared pages.
        assert not gc.isenabled()
        assert {"daemons.process.runner", "daemons.process.watch", "encodings.idna"} <= set(sys.modules)
    assert gc.isenabled(), "the supervisor collects its own garbage again once the first children are forked"
    assert not Heartbeat.objects.exists()
    assert not TickMinute.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_rehearsed_start_makes_its_queries_and_rolls_its_write_back() -> None:
    [spec] = children.child_specs(["counter"])
    with CaptureQueriesContext(connection) as captured:
        children._rehearse_start(spec)
    statements = [query["sql"].split()[0].upper() for query in captured.captured_queries]
    assert "SELECT" in statements and ({"INSERT", "UPDATE"} & set(statements)), statements
    assert any("daemons_tickminute" in query["sql"] for query in captured.captured_queries)
    assert not Heartbeat.objects.exists() and not TickMinute.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_collector_comes_back_on_when_a_fork_fails(collector_restored) -> None:
    with pytest.raises(OSError), children.prepared(children.child_specs(["counter"])):
        raise OSError("fork failed")
    assert gc.isenabled()
