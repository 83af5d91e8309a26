"""Operator orders kept in the database: pause and resume an instance, run a job now."""
from __future__ import annotations

import pytest

from daemons import control
from daemons.models import Pause, RunRequest

pytestmark = pytest.mark.django_db


def test_pause_and_resume_one_instance() -> None:
    assert control.pause("counter", 1, by="ops") is True
    assert control.pause("counter", 1) is False  # already paused: the first record stays
    assert Pause.objects.get().paused_by == "ops"
    assert control.is_paused("counter", 1) and not control.is_paused("counter", 0)
    assert control.paused() == {("counter", 1)}
    assert control.resume("counter", 1) is True
    assert control.resume("counter", 1) is False
    assert not control.is_paused("counter", 1)


def test_a_run_request_is_claimed_once() -> None:
    assert control.request_run("digest", "daily", by="ops") is True
    assert control.request_run("digest", "daily") is False
    control.request_run("digest", "weekly")
    control.request_run("other", "daily")
    assert control.pending_runs() == {("digest", "daily"), ("digest", "weekly"), ("other", "daily")}
    assert control.claim_run_requests("digest") == {"daily", "weekly"}
    assert control.claim_run_requests("digest") == set()
    assert list(RunRequest.objects.values_list("daemon", "job")) == [("other", "daily")]


def test_database_errors_read_as_no_order() -> None:
    from django.db import connection

    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE daemons_pause RENAME TO daemons_pause_gone")
        cursor.execute("ALTER TABLE daemons_runrequest RENAME TO daemons_runrequest_gone")
    assert control.is_paused("counter") is False
    assert control.claim_run_requests("digest") == set()
