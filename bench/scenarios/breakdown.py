"""Milliseconds per customer in each step of ours, beside the same steps done the floor's way.

    .venv/bin/python -m bench.scenarios.breakdown [--customers 400]

In one process, against the SMTP sink and a fresh SQLite file: ours claims, renders,
sends through Django's email framework and records, step by step, as the onboarding
daemon's tick does; then the same email goes out as bytes through a bare smtplib
connection, and the same record is written with two raw statements in one transaction. The difference
between the two columns is what the framework costs in each step.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from email.generator import BytesGenerator
from email.message import Message
from typing import Any, TypeVar

from bench.harness import in_process

T = TypeVar("T")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=400)
    n = parser.parse_args().customers
    with in_process.showcase("bench-breakdown-") as sink:
        import smtplib

        from django.db import connection, transaction
        from django.utils import timezone

        from customers import onboarding
        from customers.models import Customer, Onboarding

        Customer.objects.bulk_create(Customer(name=f"Bench {i}", email=f"bench{i}@example.com") for i in range(n))
        owner = onboarding.Owner.current(0)
        mail = onboarding.mail_connection()  # the daemon's backend, which sends the welcome email's own bytes
        mail.open()
        steps = dict.fromkeys(("claim", "render", "send", "record"), 0.0)
        messages = []
        while batch := _timed(steps, "claim", onboarding.customers_claim, owner=owner, now=timezone.now(), limit=50):
            for customer in batch:
                message = _timed(steps, "render", onboarding.welcome_email, customer)
                message.connection = mail
                _timed(steps, "send", message.send)
                _timed(steps, "record", onboarding.customer_onboarding_complete, customer=customer, owner=owner,
                       now=timezone.now())
                messages.append((customer.pk, customer.email, _wire_bytes(message.message())))
        mail.close()

        Onboarding.objects.all().delete()  # the bare records are written afresh
        bare = {"send": 0.0, "record": 0.0}
        smtp = smtplib.SMTP("127.0.0.1", sink.port)
        for pk, email, data in messages:
            _timed(bare, "send", smtp.sendmail, "welcome@localhost", [email], data)

            def record(pk: int = pk) -> None:
                now = timezone.now()
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("UPDATE customers_customer SET onboarded_at = %s WHERE id = %s", [now, pk])
                    cursor.execute("INSERT INTO customers_onboarding (customer_id, onboarded_at, message_id, "
                                   "onboarded_by) VALUES (%s, %s, %s, %s)", [pk, now, f"<{pk}@localhost>", "bare"])

            _timed(bare, "record", record)
        smtp.quit()
    print(f"{n} customers; milliseconds per customer")
    print(f"{'step':8} {'ours':>7} {'bare':>7}")
    for step, seconds in steps.items():
        other = f"{bare[step] / n * 1000:7.2f}" if step in bare else "      –"
        print(f"{step:8} {seconds / n * 1000:7.2f} {other}")
    print(f"{'total':8} {sum(steps.values()) / n * 1000:7.2f}")
    return 0


def _wire_bytes(message: Message) -> bytes:
    """`message` as Django's SMTP backend sends it: CRLF line ends, no ">From" mangling."""
    buffer = io.BytesIO()
    BytesGenerator(buffer, mangle_from_=False).flatten(message, linesep="\r\n")
    return buffer.getvalue()


def _timed(totals: dict[str, float], step: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    began = time.perf_counter()
    try:
        return function(*args, **kwargs)
    finally:
        totals[step] += time.perf_counter() - began


if __name__ == "__main__":
    sys.exit(main())
