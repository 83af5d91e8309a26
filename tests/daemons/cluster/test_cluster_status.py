"""The cluster view: every instance on every host from the heartbeat rows, dead instances, their claims, pruning."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from customers import onboarding
from customers.models import Customer
from daemons.cluster import heartbeat
from daemons.console.status import cluster_statuses
from daemons.models import Heartbeat, Pause
from tests.conftest import wait_for
from tests.customers import conftest as customers_conftest
from tests.customers.conftest import onboarding_env

HOST = socket.gethostname()


smtp_sink = customers_conftest.smtp_sink  # the SMTP sink fixture, shared with the onboarding tests


def beat(name: str, host: str, *, instance: int = 0, pid: int = 100, age: timedelta = timedelta(0),
         stopped: bool = False, processed: int = 0) -> Heartbeat:
    now = timezone.now()
    return Heartbeat.objects.create(name=name, instance=instance, host=host, pid=pid, started_at=now - age,
                                    last_heartbeat=now - age, processed=processed, errors=1,
                                    stopped_at=now - age if stopped else None)


def run_status(capsys, *args: str) -> tuple[object, str]:
    code: object = 0
    try:
        call_command("daemonstatus", "--all-hosts", *args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().out


@pytest.mark.django_db
def test_all_hosts_lists_every_instance_with_host_state_pid_heartbeat_and_counters(capsys) -> None:
    dead_after = heartbeat.overdue_after("onboarding")
    beat("onboarding", HOST, instance=1, pid=11, processed=5)
    beat("onboarding", "web2", instance=1, pid=22, age=dead_after + timedelta(seconds=1), processed=7)
    beat("onboarding", "web3", instance=2, pid=33, age=dead_after - timedelta(seconds=1))
    beat("digest", "web2", pid=44, stopped=True, age=timedelta(hours=2))
    Pause.objects.create(name="onboarding", instance=2, paused_at=timezone.now())

    code, out = run_status(capsys, "--json")
    rows = {(row["host"], row["name"], row["instance"]): row for row in json.loads(out)}
    assert {key: (row["state"], row["pid"], row["processed"], row["errors"]) for key, row in rows.items()} == {
        (HOST, "onboarding", 1): ("running", 11, 5, 1),
        ("web2", "onboarding", 1): ("dead", 22, 7, 1),
        ("web3", "onboarding", 2): ("running", 33, 0, 1),
        ("web2", "digest", 0): ("stopped", 44, 0, 1),
    }
    assert rows[("web3", "onboarding", 2)]["paused"] is True
    assert rows[("web2", "onboarding", 1)]["last_heartbeat"]
    assert code == 1  # a dead instance: LSB's "dead"

    code, out = run_status(capsys)
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["HOST", "NAME", "STATE", "PID", "HEARTBEAT"]
    [dead] = [line for line in lines if line.startswith("web2") and "onboarding.1" in line]
    assert dead.split()[2:4] == ["dead", "22"]
    assert code == 1


@pytest.mark.django_db
def test_all_hosts_with_only_live_instances_exits_0(capsys) -> None:
    beat("onboarding", "web2")
    assert run_status(capsys, "onboarding")[0] == 0


@pytest.mark.django_db
def test_the_rule_is_three_heartbeat_periods_without_a_clean_stop() -> None:
    now = timezone.now()
    limit = heartbeat.overdue_after("onboarding")
    state = heartbeat.instance_state
    assert state(name="onboarding", stopped_at=None, last_heartbeat=now - limit, now=now) == "running"
    assert state(name="onboarding", stopped_at=None, last_heartbeat=now - limit - timedelta(seconds=1),
                 now=now) == "dead"
    assert state(name="onboarding", stopped_at=now, last_heartbeat=now - timedelta(days=3), now=now) == "stopped"
    assert [row.state for row in cluster_statuses()] == []


def owner_of(host: str, instance: int, pid: int) -> onboarding.Owner:
    return onboarding.Owner(host, instance, f"key-{host}-{instance}", f"{pid}-abcd")


@pytest.mark.django_db
def test_a_dead_instances_claims_are_free_at_once_a_live_ones_are_not() -> None:
    now = timezone.now()
    Customer.objects.bulk_create([Customer(name=f"C{i}", email=f"c{i}@example.com") for i in range(6)])
    dead, live, stopped = owner_of("web2", 1, 22), owner_of("web3", 1, 33), owner_of("web4", 0, 44)
    for owner in (dead, live, stopped):
        assert len(onboarding.customers_claim(owner=owner, now=now, limit=2)) == 2
    beat("onboarding", "web2", instance=1, pid=22, age=heartbeat.overdue_after("onboarding") + timedelta(seconds=2))
    beat("onboarding", "web3", instance=1, pid=33)
    beat("onboarding", "web4", pid=44, stopped=True)
    # A row of that host and instance but of another process frees nothing of the live one.
    beat("onboarding", "web3", instance=2, pid=33, age=timedelta(hours=1))

    me = owner_of(HOST, 0, 99)
    taken = onboarding.customers_claim(owner=me, now=now, limit=10)
    assert len(taken) == 4  # the leases (60 s) are far from over: only the rule freed them
    assert Customer.objects.filter(claimed_by=str(live)).count() == 2
    # The dead instance comes back: it holds nothing any more and can record nothing.
    assert onboarding.customer_onboarding_complete(customer=taken[0], owner=dead, now=now) is False


@pytest.mark.django_db
def test_rows_gone_for_over_a_day_are_pruned_once_an_hour_by_the_daemons(monkeypatch) -> None:
    old = beat("onboarding", "web2", age=heartbeat.PRUNE_AFTER + timedelta(minutes=1))
    old_stopped = beat("digest", "web2", stopped=True, age=heartbeat.PRUNE_AFTER + timedelta(minutes=1))
    recent_dead = beat("onboarding", "web3", age=timedelta(hours=20))
    later = 1000.0 + heartbeat.PRUNE_EVERY.total_seconds() + 1
    clock = iter([1000.0, 1000.0 + heartbeat.PRUNE_EVERY.total_seconds() - 1, later, later]).__next__
    monkeypatch.setattr(heartbeat, "_last_prune", None)

    heartbeat.prune_if_due(clock)
    assert set(Heartbeat.objects.values_list("pk", flat=True)) == {recent_dead.pk}
    assert not Heartbeat.objects.filter(pk__in=[old.pk, old_stopped.pk]).exists()
    Heartbeat.objects.filter(pk=recent_dead.pk).update(last_heartbeat=timezone.now() - timedelta(days=2))
    heartbeat.prune_if_due(clock)  # within the hour: no query, nothing pruned
    assert Heartbeat.objects.count() == 1
    heartbeat.prune_if_due(clock)
    assert Heartbeat.objects.count() == 0


@pytest.mark.django_db
def test_a_heartbeat_write_prunes(monkeypatch) -> None:
    beat("onboarding", "web2", age=timedelta(days=2))
    monkeypatch.setattr(heartbeat, "_last_prune", None)
    heartbeat.write("onboarding", 0, counters=heartbeat.Counters(), started_at=timezone.now(), status_text="")
    assert list(Heartbeat.objects.values_list("host", flat=True)) == [HOST]


@pytest.mark.process
def test_a_killed_instance_on_another_host_shows_dead_and_its_claims_go_to_the_living(
        pg_database, project, smtp_sink, tmp_path) -> None:
    """Two "hosts" (run directories) on PostgreSQL; kill -9 one mid-claim: `--all-hosts` says dead, work goes on."""
    import psycopg

    from tests.daemons.cluster.test_cluster_wakeup import query

    onboarding_env(project, smtp_sink, lease_seconds=600)  # only the dead rule can free its claims in time
    project.env["DATABASE_URL"] = pg_database
    smtp_sink.handler.delay = 0.5  # slow mail: the victim holds claims when it dies
    host_b = {"DAEMONS_RUN_DIR": str(tmp_path / "b-run"), "DAEMONS_LOG_DIR": str(tmp_path / "b-log")}
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("INSERT INTO customers_customer (name, email, created_at, attempts, last_error, claimed_by)"
                     " SELECT 'C' || i, 'c' || i || '@example.com', now(), 0, '', '' FROM generate_series(1, 40) i")
    victim = project.popen("rundaemon", "onboarding", "--instance", "1", stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    survivor = None
    try:
        wait_for(lambda: smtp_sink.count() >= 1, timeout=60, message="the victim sending")
        victim.kill()
        victim.wait()
        held = query(pg_database, "SELECT count(*) FROM customers_customer WHERE claimed_by LIKE %s",
                     f"%/1/{victim.pid}-%")[0][0]
        assert held > 0
        survivor = project.popen("rundaemon", "onboarding", "--instance", "2", env=host_b,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        smtp_sink.handler.delay = 0

        def states() -> dict[int, str]:
            result = project.manage("daemonstatus", "--all-hosts", "--json", "onboarding")
            return {row["pid"]: row["state"] for row in json.loads(result.stdout)}

        wait_for(lambda: states().get(victim.pid) == "dead", timeout=60, message="the victim shown dead")
        wait_for(lambda: query(pg_database, "SELECT count(*) FROM customers_onboarding")[0][0] == 40, timeout=90,
                 message="every customer onboarded, the victim's claims included, long before their lease ends")
        assert states()[survivor.pid] == "running"
    finally:
        for proc in (victim, survivor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
