"""The benchmark's Django side, run in a child process with one system's settings and environment.

    python -m bench.harness.driver seed N          create N waiting customers (and the peer's N tasks)
    python -m bench.harness.driver signups RATE SECONDS
        sign customers up through the real signup service at RATE a second for SECONDS,
        wait until they are onboarded, and print their signup-to-onboarded times (ms) as JSON
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.harness.settings")


def peer_enqueue() -> Callable[[int], None] | None:
    """The peer's enqueue function, or None for systems that find waiting customers themselves."""
    from bench.peers.apps import TASK_MODULES

    peer = os.environ.get("BENCH_PEER", "").split("-")[0]
    return importlib.import_module(TASK_MODULES[peer]).enqueue if peer in TASK_MODULES else None


def seed(count: int) -> None:
    from django.db import transaction

    from customers.models import Customer

    enqueue = peer_enqueue()
    with transaction.atomic():
        customers = Customer.objects.bulk_create(
            Customer(name=f"Bench {i}", email=f"bench{i}@example.com") for i in range(count)
        )
        ids = [c.pk for c in customers] if customers and customers[0].pk else list(
            Customer.objects.order_by("id").values_list("id", flat=True))
        if enqueue is not None:
            # Enqueued on commit in one go, so the worker starts with the whole backlog.
            transaction.on_commit(lambda: [enqueue(pk) for pk in ids])
    print(json.dumps({"seeded": len(ids)}), flush=True)


def signups(rate: float, seconds: float, timeout: float = 120.0) -> None:
    from django.db import transaction

    from customers.models import Customer
    from customers.signup import customer_create

    enqueue = peer_enqueue()
    total = int(rate * seconds)
    ids = []
    began = time.monotonic()
    for i in range(total):
        # Paced to a fixed schedule: a slow signup is not followed by a burst to catch up.
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        with transaction.atomic():
            customer, created = customer_create(name=f"Signup {i}", email=f"signup{i}-{os.getpid()}@example.com")
            if enqueue is not None and created:
                transaction.on_commit(functools.partial(enqueue, customer.pk))
        ids.append(customer.pk)
    deadline = time.monotonic() + timeout
    pending = Customer.objects.filter(pk__in=ids, onboarded_at__isnull=True)
    while pending.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"driver: {pending.count()} of {total} signups not onboarded after {timeout:.0f} s")
        time.sleep(0.05)
    rows = Customer.objects.filter(pk__in=ids).values_list("created_at", "onboarded_at")
    latencies = []
    for signed_up, done in rows:
        assert done is not None, "the wait above returns only once every signup is onboarded"
        latencies.append((done - signed_up).total_seconds() * 1000)
    latencies.sort()
    print(json.dumps({"latencies_ms": latencies}), flush=True)


def main(argv: list[str]) -> None:
    import django

    django.setup()
    if argv[:1] == ["seed"] and len(argv) == 2:
        seed(int(argv[1]))
    elif argv[:1] == ["signups"] and len(argv) == 3:
        signups(float(argv[1]), float(argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
