"""What a customer costs ours in CPU and wall time: the onboarding daemon's tick over a backlog, in one process.

    .venv/bin/python -m bench.scenarios.tick_cost [--customers 1000] [--runs 5] [--concurrency 1 2]

Seeds N waiting customers in a fresh SQLite file and runs `OnboardingDaemon.tick` once,
which claims, sends (to the benchmark's SMTP sink, a process of its own) and records
them all. CPU is this process's (every thread, `time.process_time`), so it counts the
framework's work and not the sink's; wall time includes waiting for the sink. Medians
of the runs, for each ONBOARDING_SEND_CONCURRENCY given. Without start-up, unlike the
drain of `make bench`: this is the figure to compare commits with, as the machine's load
moves it less than a drain rate.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench.harness import in_process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with in_process.showcase("bench-tick-cost-"):
        from django.test.utils import override_settings
        from django.utils import timezone

        from customers.daemons import OnboardingDaemon
        from customers.models import Customer

        print(f"{args.customers} customers a tick, {args.runs} runs (medians); microseconds per customer")
        print(f"{'concurrency':>11} {'CPU':>7} {'wall':>7} {'per second':>11}")
        for concurrency in args.concurrency:
            with override_settings(ONBOARDING_SEND_CONCURRENCY=concurrency):
                daemon = OnboardingDaemon()
                daemon.setup()
                cpu, wall = [], []
                for run in range(args.runs):
                    Customer.objects.bulk_create(
                        Customer(name=f"Bench {i}", email=f"c{concurrency}r{run}n{i}@example.com")
                        for i in range(args.customers))
                    cpu_began, wall_began = time.process_time(), time.perf_counter()
                    result = daemon.tick(timezone.now())
                    cpu.append((time.process_time() - cpu_began) / args.customers * 1e6)
                    wall.append((time.perf_counter() - wall_began) / args.customers * 1e6)
                    if result.processed != args.customers:
                        print(f"the tick onboarded {result.processed} of {args.customers}: {result.summary}",
                              file=sys.stderr)
                        return 1
                daemon.teardown()
            print(f"{concurrency:>11} {statistics.median(cpu):7.0f} {statistics.median(wall):7.0f} "
                  f"{1e6 / statistics.median(wall):11.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
