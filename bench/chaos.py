"""A chaos run: real daemons on two hosts, signups through the real site, faults drawn at random; then the
onboarding promise is checked and reported.

    .venv/bin/python -m bench.chaos [--minutes M | --seconds S] [--seed N] [--out DIR]   (`make chaos`)

It starts its own PostgreSQL cluster (tests/pg.py, through scripts/test-env.d/postgres.sh), SMTP sink and
gunicorn, and leaves nothing running, also on Ctrl-C or a crash: it is a child subreaper, so every process
it started stays its descendant, and whatever is still running at the end is stopped. The report goes to
OUT/report.json and OUT/report.txt (default var/chaos/); the exit status is 1 when an invariant broke.
docs/reliability.md says what each fault tests.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.env_runner import run_py

if TYPE_CHECKING:
    from bench.chaos_faults import Fault

BASE_DIR = Path(__file__).resolve().parent.parent
RATE = 20.0  # signups a second
# Under back-to-back faults the daemons onboard fewer than RATE a second, so a long run ends with a backlog
# that grows with its length. The drain may take `--drain` seconds plus this long a customer: slower is a stall.
DRAIN_SECONDS_PER_CUSTOMER = 0.1
FAULT_GAP = (3.0, 8.0)  # seconds between two faults
RESTART_DELAY = (1.0, 3.0)  # seconds before a killed process is started again, as systemd's RestartSec
ONBOARDING_INTERVAL = 2.0
PROGRESS_EVERY = 30.0  # seconds between two lines of progress.log


def say(message: str) -> None:
    print(f"chaos: {message}", flush=True)


def product_env(database_url: str, sink_url: str, static_root: Path) -> dict[str, str]:
    """The environment of every product process: production settings, this run's database and mail server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_", "DAEMONS_", "ONBOARDING_"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "signup_site.settings",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "STATIC_ROOT": str(static_root),
        "DATABASE_URL": database_url,
        "EMAIL_URL": sink_url,
        # The driver signs up from one address, far more often than a person would.
        "SIGNUP_RATE_LIMIT": "0",
        "ONBOARDING_INTERVAL_SECONDS": str(ONBOARDING_INTERVAL),
        # Retries come within seconds, so the backlog drains within the run's deadline.
        "ONBOARDING_RETRY_BASE_SECONDS": "1",
        "ONBOARDING_RETRY_MAX_SECONDS": "10",
        # Two emails in flight per daemon: the duplicates a fault may cause are counted in them (chaos_faults).
        "ONBOARDING_SEND_CONCURRENCY": "2",
    })
    return env


def check(sink_copies: dict[str, list[tuple[str, float]]], refused: set[str], faults: list[Fault],
          began: float) -> dict[str, Any]:
    """The onboarding promise, read from the database and the mail server's store.

    Each duplicate is put down to the last fault that began before its first copy was stored: a
    guess to start a diagnosis from, not a proof.
    """
    from customers.models import Customer, Onboarding

    customers = Customer.objects.count()
    states = {str(state): count for state, count in Customer.objects.onboarding_counts().items()}
    pending = Customer.objects.pending().count()
    # Not onboarded and no longer pending (failed, or set aside for a person): each must say why.
    settled = Customer.objects.filter(onboarded_at__isnull=True).exclude(pk__in=Customer.objects.pending().values("pk"))
    unexplained = settled.filter(last_error="", attention_reason="").count()
    rows = Onboarding.objects.count()
    distinct = Onboarding.objects.values("customer_id").distinct().count()
    recorded = dict(Onboarding.objects.values_list("customer__email", "message_id"))
    emails = {email.lower() for email in Customer.objects.values_list("email", flat=True)}
    stored = {address: found for address, found in sink_copies.items() if address in emails}
    copies = {address: [message_id for message_id, _at in found] for address, found in stored.items()}
    blamed: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    for address, found in stored.items():
        if len(found) > 1:
            times = sorted(round(at - began, 1) for _id, at in found)
            before = [fault for fault in faults if fault.at <= times[0]]
            kind = before[-1].kind.value if before else "none"
            blamed[kind] += len(found) - 1
            if sum(1 for example in examples if example["kind"] == kind) < 5:  # a few after each kind of fault
                examples.append({"to": address, "copies_at": times, "kind": kind,
                                 "last_fault": f"{before[-1].at} s {before[-1].kind} {before[-1].target}"
                                 if before else ""})
    duplicates = sum(len(ids) - 1 for ids in copies.values())
    distinct_ids = sorted(address for address, ids in copies.items() if len(set(ids)) > 1)
    unmailed = sorted(email for email in recorded if email.lower() not in copies)
    wrong_id = sorted(email for email, message_id in recorded.items()
                      if email.lower() in copies and message_id.strip() not in copies[email.lower()])
    onboarded_refused = sorted(email for email in recorded if email.lower() in refused)
    reasons = Counter(error.split(":")[0][:80] for error in settled.values_list("last_error", flat=True))
    return {
        "customers": customers,
        "failure_reasons": dict(reasons.most_common(10)),
        "states": states,
        "lost": pending + unexplained,
        "pending": pending,
        "pending_examples": [
            {key: str(value) for key, value in row.items()}
            for row in Customer.objects.pending().values(
                "pk", "email", "created_at", "claimed_by", "claim_expires_at", "attempts", "next_attempt_at")[:5]],
        "settled_without_reason": unexplained,
        "duplicate_rows": rows - distinct,
        "onboarded_without_row": Customer.objects.onboarded().filter(onboarding__isnull=True).count(),
        "emails": sum(len(ids) for ids in copies.values()),
        "duplicate_emails": duplicates,
        "duplicate_recipients": sum(1 for ids in copies.values() if len(ids) > 1),
        "duplicate_emails_distinct_ids": len(distinct_ids),
        "duplicates_after": dict(blamed.most_common()),
        "duplicate_examples": examples,
        "distinct_id_examples": distinct_ids[:10],
        "onboarded_unmailed": len(unmailed),
        "unmailed_examples": unmailed[:10],
        "recorded_id_not_sent": len(wrong_id),
        "onboarded_refused": len(onboarded_refused),
    }


def pending_count() -> int | None:
    """Customers still to be onboarded or retried, or None while the database can't be read."""
    from django.db import close_old_connections

    from customers.models import Customer

    try:
        close_old_connections()
        return Customer.objects.pending().count()
    except Exception:  # the database may be restarting
        return None


def progress() -> str:
    """One line on how far onboarding has got and what each daemon last said: a stall shows when it began."""
    from django.db import close_old_connections

    from customers.models import Customer
    from daemons.models import Heartbeat

    try:
        close_old_connections()
        states = {str(state): count for state, count in Customer.objects.onboarding_counts().items()}
        beats = "; ".join(
            f"{row.host}:{row.name}.{row.instance} pid {row.pid} {row.last_outcome or '-'} "
            f"beat {row.last_heartbeat:%H:%M:%S} {row.status_text[:60]!r}"
            for row in Heartbeat.objects.filter(stopped_at__isnull=True).order_by("host", "name", "instance"))
        return f"{states} | {beats}"
    except Exception as exc:  # the database may be restarting: that is a fault, not the harness's failure
        return f"unread: {exc.__class__.__name__}: {str(exc)[:100]}"


def invariants(report: dict[str, Any]) -> list[str]:
    """Each broken invariant, in one line."""
    broken = []
    if report["lost"]:
        broken.append(f"{report['lost']} customers lost (neither onboarded nor failed with a reason)")
    if report["duplicate_rows"]:
        broken.append(f"{report['duplicate_rows']} duplicate Onboarding rows")
    if report["onboarded_without_row"]:
        broken.append(f"{report['onboarded_without_row']} customers onboarded without an Onboarding row")
    if report["onboarded_unmailed"]:
        broken.append(f"{report['onboarded_unmailed']} customers recorded onboarded whose email the server never "
                      f"stored, e.g. {report['unmailed_examples'][:3]}")
    if report["recorded_id_not_sent"]:
        broken.append(f"{report['recorded_id_not_sent']} Onboarding rows with a Message-ID no stored copy has")
    if report["onboarded_refused"]:
        broken.append(f"{report['onboarded_refused']} customers onboarded although the server refused them")
    if report["duplicate_emails_distinct_ids"]:
        broken.append(f"{report['duplicate_emails_distinct_ids']} recipients got copies with different Message-IDs, "
                      f"e.g. {report['distinct_id_examples'][:3]}")
    if report["duplicate_emails"] > report["duplicate_budget"]:
        broken.append(f"{report['duplicate_emails']} duplicate emails, more than the {report['duplicate_budget']} "
                      "the faults could cause (one per message in flight per fault)")
    if report["left_running"]:
        broken.append(f"left running after stopdaemon --all: {', '.join(report['left_running'])}")
    if not report["drained"]:
        broken.append(f"the backlog did not drain within {report['drain_deadline']:g} s")
    if not report["customers"]:
        broken.append("no customer signed up: the run tested nothing")
    return broken


def summary(report: dict[str, Any]) -> str:
    faults = ", ".join(f"{kind} {count}" for kind, count in report["faults"].items() if count) or "none"
    signups = report["signups"]
    lines = [
        f"chaos run: {report['seconds']:g} s of faults, seed {report['seed']} "
        f"(repeat: make chaos CHAOS_MINUTES={report['seconds'] / 60:g} CHAOS_SEED={report['seed']})",
        f"faults ({sum(report['faults'].values())}): {faults}",
        f"signups: {signups['accepted']} accepted of {signups['attempted']} ({signups['gave_up']} gave up after "
        f"retries, {signups['retried']} retried); statuses {signups['statuses']}",
        f"customers: {report['customers']} {report['states']}; failure reasons {report['failure_reasons']}",
        f"lost: {report['lost']}   duplicate rows: {report['duplicate_rows']}   "
        f"duplicate emails: {report['duplicate_emails']} to {report['duplicate_recipients']} recipients "
        f"(budget {report['duplicate_budget']})   with distinct Message-IDs: {report['duplicate_emails_distinct_ids']}",
        f"duplicates by the fault before them: {report['duplicates_after'] or 'none'}",
        f"drained {report['backlog_when_faults_stopped']} pending in {report['drain_seconds']:g} s "
        f"({report['drain_rate']}/s); stopdaemon --all: "
        + "; ".join(f"{host} exit {code}" for host, code in report["stopdaemon"].items()),
        f"processes that died unasked: {report['unexpected_exits'] or 'none'}",
        f"left running: {report['left_running'] or 'nothing'}",
    ]
    if report["errors"]:
        lines.append(f"harness errors: {report['errors']}")
    lines.append("invariants: " + ("all hold" if not report["broken"] else "BROKEN"))
    lines += [f"  - {line}" for line in report["broken"]]
    return "\n".join(lines)


class Stop(Exception):
    """SIGTERM or SIGHUP reached the harness: stop as after Ctrl-C."""


def _stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def run(seconds: float, seed: int, out: Path, drain_deadline: float) -> int:
    runner = run_py()
    runner.become_subreaper()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="chaos-"))  # short: wake-up sockets live under it
    work.chmod(0o711)
    rng = random.Random(seed)
    say(f"seed {seed} (repeat with CHAOS_SEED={seed}); {seconds:g} s of faults; logs in {out}")
    try:
        with ExitStack() as stack:
            return _run(stack, rng, seconds, seed, out, work, drain_deadline)
    finally:
        leftovers = runner.stop_leftovers()
        if leftovers:
            say("stopped what was left running: " + ", ".join(f"{pid} ({name})" for pid, name in leftovers.items()))
        shutil.rmtree(work, ignore_errors=True)


def _run(stack: ExitStack, rng: random.Random, seconds: float, seed: int, out: Path, work: Path,
         drain_deadline: float) -> int:
    from tests.pg import own_cluster, pg_ctl

    say("starting PostgreSQL")
    cluster = stack.enter_context(own_cluster())
    # This process reads the database with the product's own queries: the same settings as the product's.
    env = product_env(cluster.url, "", work / "static")
    os.environ.update(env)
    import django

    django.setup()
    from bench.chaos_faults import Injector, World
    from bench.chaos_world import Host, Service, Signups, Sink, faketime_library
    from daemons.cluster.heartbeat import overdue_after
    from tests.webserver import gunicorn

    sink = Sink()
    sink.start()
    stack.callback(sink.stop)
    env["EMAIL_URL"] = sink.url
    for command in (["migrate", "--no-input"], ["collectstatic", "--no-input"]):
        done = subprocess.run([sys.executable, "manage.py", *command], cwd=BASE_DIR, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {command[0]} failed: {done.stderr.strip()[-500:]}")
    faketime = faketime_library()
    hosts = {name: Host.make(name, work, out, env, faketime) for name in ("chaos-a", "chaos-b")}
    a, b = hosts["chaos-a"], hosts["chaos-b"]
    services = [
        Service("chaos-a-supervisor", a, ("rundaemon", "--all"), supervisor=True),
        Service("chaos-a-onboarding-1", a, ("rundaemon", "onboarding", "--instance", "1")),
        Service("chaos-b-onboarding-0", b, ("rundaemon", "onboarding")),
    ]
    stopping = False

    def stop_services() -> None:
        for service in services:
            service.expected_exit = True
            if service.process is not None and service.process.poll() is None:
                service.process.kill()
                service.process.wait()

    stack.callback(stop_services)
    for service in services:
        service.start()
    say("starting gunicorn")
    server = stack.enter_context(gunicorn(env, out / "gunicorn.log", workers=2, threads=4))

    def restart_pg() -> None:
        pg_ctl(cluster, "stop")
        pg_ctl(cluster, "start")

    world = World(hosts, services, sink, restart_pg, overdue_after("onboarding").total_seconds())
    injector = Injector(world, rng, FAULT_GAP)
    signups = Signups(server, RATE, f"{seed}", injector.refuse_some)
    signups.start()
    say(f"signups at {RATE:g}/s; faults every {FAULT_GAP[0]:g}-{FAULT_GAP[1]:g} s")

    def watch(now: float) -> None:
        for service in services:
            service.watch(now, lambda: rng.uniform(*RESTART_DELAY), stopping)

    began = time.monotonic()
    faults_log = (out / "faults.log").open("w")
    stack.callback(faults_log.close)
    progress_log = (out / "progress.log").open("w")
    stack.callback(progress_log.close)
    sampled = began
    while (now := time.monotonic()) < began + seconds:
        if now - sampled >= PROGRESS_EVERY:
            sampled = now
            progress_log.write(f"{now - began:7.1f} s  {progress()}\n")
            progress_log.flush()
        fault = injector.step(now)
        if fault is not None:
            line = f"{fault.at:7.1f} s  {fault.kind:<18} {fault.target}"
            faults_log.write(line + "\n")
            faults_log.flush()
            say(line)
        watch(now)
        time.sleep(0.2)
    say("faults stop; signups stop; draining")
    signups.finish()
    injector.finish()
    watch(time.monotonic())
    for service in services:  # whatever a fault killed starts again now, whatever it stopped goes on
        if service.pid is None:
            service.start()
        else:
            os.kill(service.pid, signal.SIGCONT)

    from django.db import close_old_connections

    from customers.models import Customer

    drain_began = time.monotonic()
    backlog = pending_count()
    while backlog is None and time.monotonic() < drain_began + 60:  # the database is still restarting
        time.sleep(0.5)
        backlog = pending_count()
    drain_deadline += (backlog or 0) * DRAIN_SECONDS_PER_CUSTOMER
    progress_log.write(f"{drain_began - began:7.1f} s  faults stopped, {backlog} pending: {progress()}\n")
    drained = False
    while time.monotonic() < drain_began + drain_deadline:
        watch(time.monotonic())
        if time.monotonic() - sampled >= PROGRESS_EVERY:
            sampled = time.monotonic()
            progress_log.write(f"{sampled - began:7.1f} s  draining: {progress()}\n")
            progress_log.flush()
        close_old_connections()
        try:
            if not Customer.objects.pending().exists():
                drained = True
                break
        except Exception:  # the database may still be restarting
            pass
        time.sleep(1.0)
    drain_seconds = round(time.monotonic() - drain_began, 1)
    say(f"drained: {drained} after {drain_seconds:g} s; stopping with stopdaemon --all on each host")

    stopping = True
    stopdaemon: dict[str, int] = {}
    stop_output: dict[str, str] = {}
    for host in hosts.values():
        done = host.manage("stopdaemon", "--all", timeout=180)
        stopdaemon[host.name] = done.returncode
        stop_output[host.name] = (done.stdout + done.stderr).strip()
    left_running = []
    deadline = time.monotonic() + 30
    for service in services:
        if service.process is not None:
            service.expected_exit = True
            try:
                service.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                left_running.append(f"{service.label} (pid {service.process.pid})")
    for host in hosts.values():
        left_running += [f"{host.name}:{name}" for name in host.leftovers()]
    runner = run_py()
    keep = {os.getpid(), server.process.pid, *runner.descendants(server.process.pid)}
    postmaster = int((cluster.directory / "data" / "postmaster.pid").read_text().split()[0])
    keep |= {postmaster, *runner.descendants(postmaster)}
    left_running += [f"pid {pid} ({name})" for pid, name in runner.descendants(os.getpid()).items()
                     if pid not in keep and name not in ("unshare", "sh")]

    close_old_connections()
    report: dict[str, Any] = {
        "seed": seed,
        "seconds": seconds,
        "faults": injector.counts(),
        "fault_list": [{"at": f.at, "kind": f.kind.value, "target": f.target} for f in injector.faults],
        "signups": {**vars(signups.stats), "statuses": {str(k): v for k, v in signups.stats.statuses.items()}},
        **check(sink.copies(), injector.refused, injector.faults, injector.began),
        "duplicate_budget": injector.duplicate_budget(),
        "refused_addresses": len(injector.refused),
        "drained": drained,
        "drain_seconds": drain_seconds,
        "backlog_when_faults_stopped": backlog,
        "drain_rate": round(backlog / drain_seconds, 1) if backlog and drained and drain_seconds else None,
        "drain_deadline": drain_deadline,
        "stopdaemon": stopdaemon,
        "stopdaemon_output": stop_output,
        "unexpected_exits": {s.label: s.unexpected_exits for s in services if s.unexpected_exits},
        "restarts": {s.label: s.starts - 1 for s in services},
        "left_running": left_running,
        "errors": injector.errors,
    }
    report["broken"] = invariants(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = summary(report)
    (out / "report.txt").write_text(text + "\n")
    print(text, flush=True)
    return 1 if report["broken"] else 0


def positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=positive, help="minutes of faults (default: CHAOS_MINUTES, else 10)")
    length.add_argument("--seconds", type=positive, help="seconds of faults (default: CHAOS_SECONDS)")
    parser.add_argument("--seed", type=int, help="the fault generator's seed (default: CHAOS_SEED, else random)")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "var" / "chaos", help="where the report and logs go")
    parser.add_argument("--drain", type=positive, default=240.0,
                        help="seconds the backlog may take to drain after the faults, plus 0.1 s a pending customer "
                             "(default 240)")
    args = parser.parse_args(argv)
    if args.seconds is None and args.minutes is None:
        if os.environ.get("CHAOS_SECONDS"):
            args.seconds = positive(os.environ["CHAOS_SECONDS"])
        else:
            args.minutes = positive(os.environ.get("CHAOS_MINUTES") or "10")
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    seed = args.seed if args.seed is not None else int(os.environ.get("CHAOS_SEED") or secrets.randbelow(10**6))
    try:
        return run(seconds, seed, args.out.resolve(), args.drain)
    except (KeyboardInterrupt, Stop):
        say("interrupted; everything it started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
