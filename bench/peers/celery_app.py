"""Celery 5 with Redis as the broker: one task per signup, as the Celery docs' Django layout has it.

$BENCH_PEER `celery-reuse` sends through one SMTP connection kept by each worker process.
"""
from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.harness.settings")

app = Celery("bench", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)

REUSE = os.environ.get("BENCH_PEER") == "celery-reuse"


@app.task
def onboard_customer(customer_id: int) -> None:
    from .work import onboard

    onboard(customer_id, reuse_connection=REUSE)


def enqueue(customer_id: int) -> None:
    onboard_customer.delay(customer_id)
